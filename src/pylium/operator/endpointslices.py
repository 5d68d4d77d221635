"""EndpointSlice controller: Pods selected by each Service -> its EndpointSlices, as
Kubernetes' controller (pkg/controller/endpointslice) writes them.

For a Service with a selector, every pod of its namespace that matches, has an IP and has not
finished becomes an endpoint: `ready` = Ready condition True and not terminating, `serving` =
Ready condition True, `terminating` = deletionTimestamp set; with its nodeName and a targetRef.
Each service port's targetPort is resolved per pod (a number, or a container port name looked up
by name and protocol; a pod that lacks the name is left out of that port). Pods with the same
resolved ports share slices of at most 100 endpoints; slice names are derived from the service
and the port mapping, so every pass computes the same objects and writes only differences.

Services without a selector are left alone (their slices are the user's); a deleted Service's
slices are deleted (Kubernetes' garbage collector does it through ownerReferences).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Iterable
from typing import Any

from pylium.api.discovery import MANAGED_BY_LABEL, SERVICE_NAME_LABEL
from pylium.store import AlreadyExists, Conflict, Event, NotFound, Object, Store
from pylium.store.reflector import Reflector

log = logging.getLogger(__name__)

KIND = "EndpointSlice"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
MAX_ENDPOINTS_PER_SLICE = 100
"""Kubernetes' default `--max-endpoints-per-slice`."""

ServiceKey = tuple[str, str]


def _matches(selector: dict[str, str], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _pod_ready(pod: Object) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _resolve(pod: Object, target: object, protocol: str) -> int | None:
    """A service port's targetPort on one pod (kube's podutil.FindPort)."""
    if isinstance(target, int):
        return target
    for container in (pod.get("spec") or {}).get("containers") or []:
        for p in container.get("ports") or []:
            if p.get("name") == target and (p.get("protocol") or "TCP") == protocol:
                return int(p["containerPort"])
    return None


def _endpoint(pod: Object) -> Object:
    meta = pod["metadata"]
    serving = (pod.get("status") or {}).get("phase") == "Running" and _pod_ready(pod)
    terminating = bool(meta.get("deletionTimestamp"))
    ep: Object = {
        "addresses": [pod["status"]["podIP"]],
        "conditions": {
            "ready": serving and not terminating,
            "serving": serving,
            "terminating": terminating,
        },
        "targetRef": {
            "kind": "Pod",
            "namespace": meta.get("namespace") or "default",
            "name": meta["name"],
        },
    }
    if meta.get("uid"):
        ep["targetRef"]["uid"] = meta["uid"]
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        ep["nodeName"] = node
    return ep


def desired_slices(service: Object, pods: Iterable[Object]) -> list[Object] | None:
    """The EndpointSlices `service` should have given `pods` (any namespace; filtered here);
    None when the service has no selector (not this controller's business)."""
    spec = service.get("spec") or {}
    selector = spec.get("selector")
    if not selector or spec.get("type") == "ExternalName":
        return None
    meta = service["metadata"]
    ns, name = str(meta.get("namespace") or "default"), str(meta["name"])
    groups: dict[str, tuple[list[Object], list[Object]]] = {}
    for pod in pods:
        pmeta = pod["metadata"]
        status = pod.get("status") or {}
        if (pmeta.get("namespace") or "default") != ns or not _matches(
            selector, pmeta.get("labels")
        ):
            continue
        if not status.get("podIP") or status.get("phase") in ("Succeeded", "Failed"):
            continue
        ports = []
        for sp in spec.get("ports") or []:
            protocol = str(sp.get("protocol") or "TCP")
            number = _resolve(pod, sp.get("targetPort", sp["port"]), protocol)
            if number is not None:
                ports.append({"name": sp.get("name") or "", "port": number, "protocol": protocol})
        key = json.dumps(ports, sort_keys=True)
        groups.setdefault(key, (ports, []))[1].append(_endpoint(pod))
    if not groups:  # a placeholder keeps "no endpoints" explicit, as Kubernetes does
        groups[json.dumps([])] = ([], [])
    owner = {
        "apiVersion": "v1",
        "kind": "Service",
        "name": name,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    if meta.get("uid"):
        owner["uid"] = meta["uid"]
    out = []
    for key, (ports, endpoints) in sorted(groups.items()):
        endpoints.sort(key=lambda e: tuple(int(x) for x in e["addresses"][0].split(".")))
        digest = hashlib.sha256(key.encode()).hexdigest()[:5]
        chunks = [
            endpoints[i : i + MAX_ENDPOINTS_PER_SLICE]
            for i in range(0, len(endpoints), MAX_ENDPOINTS_PER_SLICE)
        ] or [[]]
        for i, chunk in enumerate(chunks):
            out.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": KIND,
                    "metadata": {
                        "name": f"{name}-{digest}" + (f"-{i}" if i else ""),
                        "namespace": ns,
                        "labels": {SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: CONTROLLER_NAME},
                        "ownerReferences": [owner],
                    },
                    "addressType": "IPv4",
                    "endpoints": chunk,
                    "ports": ports,
                }
            )
    return out


def _content(obj: Object) -> Any:
    """What the controller owns in a slice (server metadata ignored)."""
    meta = obj["metadata"]
    return (
        meta.get("labels"),
        meta.get("ownerReferences"),
        obj.get("addressType"),
        obj.get("endpoints"),
        obj.get("ports"),
    )


class EndpointSliceController:
    """Keeps managed EndpointSlices in line with Services and Pods (see the module docstring).

    Args:
        store: the cluster store.
        resync_interval: seconds between passes over every service.
    """

    def __init__(self, store: Store, resync_interval: float = 30.0) -> None:
        self._store = store
        self._resync_interval = resync_interval
        self._services = Reflector(store, "Service")
        self._pods = Reflector(store, "Pod")
        self._slices = Reflector(store, KIND)
        self._queue: asyncio.Queue[ServiceKey] = asyncio.Queue()
        self._queued: set[ServiceKey] = set()
        self.writes = 0
        """Slices created, updated or deleted (tests check idempotence with it)."""

    async def run(self) -> None:
        """Reconcile until cancelled."""
        tasks = [
            asyncio.create_task(self._services.run(self._on_service), name="eps-services"),
            asyncio.create_task(self._pods.run(self._on_pod), name="eps-pods"),
            asyncio.create_task(self._slices.run(self._on_slice), name="eps-slices"),
            asyncio.create_task(self._worker(), name="eps-worker"),
            asyncio.create_task(self._resync_loop(), name="eps-resync"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_synced(self) -> None:
        """Return once Services, Pods and EndpointSlices have been listed."""
        for r in (self._services, self._pods, self._slices):
            await r.wait_synced()

    async def wait_idle(self) -> None:
        """Return once every queued service has been reconciled."""
        await self.wait_synced()
        await self._queue.join()

    def _enqueue(self, key: ServiceKey) -> None:
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def _on_service(self, event: Event) -> None:
        meta = event.object["metadata"]
        self._enqueue((str(meta.get("namespace") or "default"), str(meta["name"])))

    def _on_pod(self, event: Event) -> None:
        # A pod may have left a selector as well as entered one: every service of the
        # namespace with a selector is looked at again (cheap: pure comparison, no write).
        ns = str(event.object["metadata"].get("namespace") or "default")
        for svc in self._services.items():
            meta = svc["metadata"]
            if (meta.get("namespace") or "default") == ns and (svc.get("spec") or {}).get(
                "selector"
            ):
                self._enqueue((ns, str(meta["name"])))

    def _on_slice(self, event: Event) -> None:
        labels = event.object["metadata"].get("labels") or {}
        if labels.get(MANAGED_BY_LABEL) == CONTROLLER_NAME and labels.get(SERVICE_NAME_LABEL):
            ns = str(event.object["metadata"].get("namespace") or "default")
            self._enqueue((ns, str(labels[SERVICE_NAME_LABEL])))

    async def _resync_loop(self) -> None:
        await self.wait_synced()
        while True:
            for svc in self._services.items():
                meta = svc["metadata"]
                self._enqueue((str(meta.get("namespace") or "default"), str(meta["name"])))
            await asyncio.sleep(self._resync_interval)

    async def _worker(self) -> None:
        await self.wait_synced()
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            try:
                await self.reconcile(*key)
            except Exception:
                log.exception("endpointslices of %s/%s failed; retried at the next resync", *key)
            finally:
                self._queue.task_done()

    async def reconcile(self, namespace: str, name: str) -> None:
        """Bring one service's managed slices to the desired set."""
        svc = self._services.get(namespace, name)
        existing = {
            str(s["metadata"]["name"]): s
            for s in self._slices.items()
            if (s["metadata"].get("namespace") or "default") == namespace
            and (s["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL) == name
            and (s["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) == CONTROLLER_NAME
        }
        wanted = desired_slices(svc, self._pods.items()) if svc is not None else []
        if wanted is None:
            wanted = []
        for obj in wanted:
            await self._write(obj, existing.get(str(obj["metadata"]["name"])))
        keep = {str(o["metadata"]["name"]) for o in wanted}
        for slice_name in sorted(set(existing) - keep):
            try:
                await self._store.delete(KIND, namespace, slice_name)
                self.writes += 1
            except NotFound:
                pass

    async def _write(self, obj: Object, cached: Object | None) -> None:
        if cached is not None and _content(cached) == _content(obj):
            return
        meta = obj["metadata"]
        for _ in range(10):
            try:
                live = await self._store.get(KIND, meta["namespace"], meta["name"])
            except NotFound:
                try:
                    await self._store.create(obj)
                    self.writes += 1
                    return
                except AlreadyExists:
                    continue
            if _content(live) == _content(obj):
                return
            new = {**obj, "metadata": {**live["metadata"], **meta}}
            try:
                await self._store.update(new)
                self.writes += 1
                return
            except Conflict:
                continue
        raise Conflict(f"EndpointSlice {meta['namespace']}/{meta['name']} kept changing")
