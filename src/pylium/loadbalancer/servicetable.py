"""The node's view of Services: store objects in, one ServiceState per Service out, with a
change tracker so consumers (the LB maps, the kube-proxy proxier) sync only what changed.

Handlers stay trivial, as kube-proxy's `OnServiceUpdate`: they recompute one service's state
and record (old, new) in the tracker; nothing touches the kernel here.
"""

from __future__ import annotations

from typing import Any

from pylium.loadbalancer.changes import Change, ChangeTracker
from pylium.loadbalancer.model import ServiceName, ServiceState
from pylium.loadbalancer.services import service_name, service_state, slice_service

Object = dict[str, Any]
SliceKey = tuple[str, str]
"""(namespace, name) of an EndpointSlice."""


class ServiceTable:
    """Services and EndpointSlices -> ServiceStates, with pending changes."""

    def __init__(self) -> None:
        self._services: dict[ServiceName, Object] = {}
        self._slices: dict[ServiceName, dict[SliceKey, Object]] = {}
        self._slice_owner: dict[SliceKey, ServiceName] = {}
        self._states: dict[ServiceName, ServiceState] = {}
        self._tracker: ChangeTracker[ServiceName, ServiceState] = ChangeTracker()
        self._trackers = [self._tracker]

    def upsert_service(self, obj: Object) -> None:
        """A Service was added or changed."""
        name = service_name(obj)
        self._services[name] = obj
        self._recompute(name)

    def delete_service(self, obj: Object) -> None:
        """A Service was deleted."""
        name = service_name(obj)
        self._services.pop(name, None)
        self._recompute(name)

    def upsert_slice(self, obj: Object) -> None:
        """An EndpointSlice was added or changed (its service label may have changed too)."""
        key = _slice_key(obj)
        self._drop_slice(key)
        owner = slice_service(obj)
        if owner is not None:
            self._slices.setdefault(owner, {})[key] = obj
            self._slice_owner[key] = owner
            self._recompute(owner)

    def delete_slice(self, obj: Object) -> None:
        """An EndpointSlice was deleted."""
        self._drop_slice(_slice_key(obj))

    def states(self) -> dict[ServiceName, ServiceState]:
        """Every service's current state."""
        return dict(self._states)

    def take_changes(self) -> dict[ServiceName, Change[ServiceState]]:
        """Changes since the last call (round trips dropped), for the table's main consumer."""
        return self._tracker.take()

    def subscribe(self) -> ChangeTracker[ServiceName, ServiceState]:
        """A tracker for one more consumer (e.g. the kube-proxy proxier beside the LB maps),
        starting with every current service as an addition."""
        tracker: ChangeTracker[ServiceName, ServiceState] = ChangeTracker()
        for name, state in self._states.items():
            tracker.record(name, None, state)
        self._trackers.append(tracker)
        return tracker

    def _drop_slice(self, key: SliceKey) -> None:
        owner = self._slice_owner.pop(key, None)
        if owner is None:
            return
        slices = self._slices.get(owner, {})
        slices.pop(key, None)
        if not slices:
            self._slices.pop(owner, None)
        self._recompute(owner)

    def _recompute(self, name: ServiceName) -> None:
        svc = self._services.get(name)
        new = None
        if svc is not None:
            new = service_state(svc, self._slices.get(name, {}).values())
        old = self._states.get(name)
        if new is None:
            self._states.pop(name, None)
        else:
            self._states[name] = new
        if old != new:
            for tracker in self._trackers:
                tracker.record(name, old, new)


def _slice_key(obj: Object) -> SliceKey:
    meta = obj["metadata"]
    return str(meta.get("namespace") or "default"), str(meta["name"])
