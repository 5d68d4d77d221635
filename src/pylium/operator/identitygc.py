"""Identity garbage collection: delete CiliumIdentity objects no pod has needed for a while.

A CiliumIdentity (cilium.io/v2, cluster-scoped, name = numeric id) carries its labels in
`security-labels` (`source:key` -> value). It is referenced while some pod's identity labels
equal that map; `in_use` answers which label sets are referenced (by default: every Pod's labels
through the identity package's own functions, so both sides agree on what a pod's labels are).

An identity is deleted only after it was seen unreferenced on every pass for `grace` seconds,
so an identity an agent has just allocated for a pod that is still being created survives. The
unreferenced-since times live in memory: a restarted operator starts every grace period again,
which errs on the side of keeping identities. An agent that finds its identity gone allocates
it again, as Cilium's agents do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pylium.identity import LabelFilter, pod_labels
from pylium.identity.model import KIND, SECURITY_LABELS
from pylium.store import NotFound, Object, Store

log = logging.getLogger(__name__)

LabelSet = frozenset[tuple[str, str]]
"""An identity's labels as (`source:key`, value) pairs."""

InUse = Callable[[], Awaitable[set[LabelSet]]]
"""Returns the label sets pods reference now."""

PodLabels = Callable[[Object, Object | None], Mapping[str, str]]
"""(pod, its Namespace or None) -> the pod's identity labels as `security-labels`."""


def label_set(security_labels: Mapping[str, Any]) -> LabelSet:
    """A `security-labels` map as a hashable set."""
    return frozenset((str(k), str(v)) for k, v in security_labels.items())


class PodIdentityLabels:
    """A pod's identity labels as the agents compute them: every derived label, then the
    identity-relevant label filter (Cilium's default rules)."""

    def __init__(self) -> None:
        self._filter = LabelFilter()

    def __call__(self, pod: Object, namespace: Object | None) -> Mapping[str, str]:
        """The pod's labels as `security-labels`."""
        return self._filter.identity_labels(pod_labels(pod, namespace)).to_map()


class PodsInUse:
    """`InUse` from the store: the identity labels of every Pod.

    Args:
        store: the cluster store.
        labels_of: how a pod's identity labels are computed (default: `PodIdentityLabels`).
    """

    def __init__(self, store: Store, labels_of: PodLabels | None = None) -> None:
        self._store = store
        self._pod_labels = labels_of or PodIdentityLabels()

    async def __call__(self) -> set[LabelSet]:
        """The label sets of every pod now."""
        namespaces, _ = await self._store.list("Namespace")
        by_name = {ns["metadata"]["name"]: ns for ns in namespaces}
        pods, _ = await self._store.list("Pod")
        return {
            label_set(self._pod_labels(pod, by_name.get(pod["metadata"].get("namespace", ""))))
            for pod in pods
        }


class IdentityGC:
    """Deletes identities unreferenced for longer than `grace` seconds, checking every
    `interval` seconds.

    Args:
        store: the cluster store.
        in_use: the referenced label sets.
        grace: seconds an identity must stay unreferenced before it is deleted.
        interval: seconds between passes.
        clock: monotonic seconds (tests pass a fake).
    """

    def __init__(
        self,
        store: Store,
        in_use: InUse,
        grace: float = 60.0,
        interval: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if grace < 0 or interval <= 0:
            raise ValueError("grace must be >= 0 and interval > 0")
        self._store = store
        self._in_use = in_use
        self.grace = grace
        self.interval = interval
        self._clock = clock
        self._unused_since: dict[str, float] = {}
        """Identity name -> when it was first seen unreferenced (since then on every pass)."""

    async def run(self) -> None:
        """A pass every interval until cancelled; a failed pass is logged and retried."""
        while True:
            try:
                await self.collect()
            except Exception:
                log.exception("identity GC pass failed")
            await asyncio.sleep(self.interval)

    async def collect(self) -> list[str]:
        """One pass; returns the names of the identities deleted."""
        # Identities first, pods second: a pod created for a listed identity in between
        # still counts as a reference.
        identities, _ = await self._store.list(KIND)
        referenced = await self._in_use()
        now = self._clock()
        deleted: list[str] = []
        seen: set[str] = set()
        for ident in identities:
            name = ident["metadata"]["name"]
            seen.add(name)
            if label_set(ident.get(SECURITY_LABELS) or {}) in referenced:
                self._unused_since.pop(name, None)
                continue
            since = self._unused_since.setdefault(name, now)
            if now - since < self.grace:
                continue
            try:
                await self._store.delete(KIND, "", name)
            except NotFound:
                pass
            else:
                log.info(
                    "deleted identity %s (%s): unused for %.0fs",
                    name,
                    ",".join(f"{k}={v}" for k, v in sorted(ident.get(SECURITY_LABELS, {}).items())),
                    now - since,
                )
                deleted.append(name)
            self._unused_since.pop(name, None)
        for name in set(self._unused_since) - seen:
            del self._unused_since[name]  # deleted by someone else
        return deleted
