"""The KubeProxy component (kube-proxy mode) against a recording applier on a real sqlite
store: the first sync is full, a new Service is an incremental sync that writes only its
chains, every ClusterIP flow is marked for masquerade (masquerade-all), and a failed load makes
the next sync full again; nftables deletes flushed chains in a follow-up sync."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from pylium.loadbalancer.kubeproxy.component import KubeProxy, KubeProxyParams
from pylium.loadbalancer.kubeproxy.proxier import Mode
from pylium.operator.endpointslices import desired_slices
from pylium.store.sqlite import SqliteStore
from tests.support import eventually
from tests.unit.loadbalancer.test_endpointslices import pod, service


def now(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """`check` as the coroutine function `eventually` polls."""

    async def run() -> bool:
        return check()

    return run


class RecordingApplier:
    """Keeps every text it was given; `fail` makes the next loads raise."""

    def __init__(self) -> None:
        self.loads: list[str] = []
        self.fail = 0

    def apply(self, mode: Mode, text: str) -> None:
        del mode
        if self.fail:
            self.fail -= 1
            raise RuntimeError("injected")
        self.loads.append(text)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.db", poll_interval=0.01)
    try:
        yield s
    finally:
        await s.close()


async def add_service(store: SqliteStore, name: str, ip: str, pod_ip: str) -> None:
    svc = service(clusterIP=ip, selector={"app": name})
    svc["metadata"]["name"] = name
    await store.create(svc)
    backend = pod(f"{name}-a", pod_ip, labels={"app": name})
    for sl in desired_slices(svc, [backend]) or []:
        await store.create(sl)


async def test_iptables_syncs_are_incremental_and_full_after_a_failure(
    store: SqliteStore,
) -> None:
    applier = RecordingApplier()
    kp = KubeProxy(KubeProxyParams("lab-node1", Mode.IPTABLES), store, applier)
    await kp.start()
    try:
        await add_service(store, "web", "10.96.0.1", "10.244.1.5")

        def has(text: str) -> bool:
            return any(text in load for load in applier.loads)

        await eventually(now(lambda: has("--to-destination 10.244.1.5:8080")))
        assert kp.proxier.full_syncs == 1
        # masquerade-all: no "! -s <cluster cidr>" on the ClusterIP's mark rule
        assert any("-d 10.96.0.1 --dport 80 -j KUBE-MARK-MASQ" in load for load in applier.loads)

        before = len(applier.loads)
        await add_service(store, "api", "10.96.0.2", "10.244.1.6")
        await eventually(now(lambda: has("--to-destination 10.244.1.6:8080")))
        partial = applier.loads[-1]
        assert "10.244.1.5:8080" not in partial  # only the changed service's chains
        assert len(applier.loads) > before and kp.proxier.full_syncs == 1

        applier.fail = 1
        await store.delete("Service", "test", "api")
        await eventually(now(lambda: kp.proxier.full_syncs == 2))
        assert "10.244.1.5:8080" in applier.loads[-1] and "10.244.1.6" not in applier.loads[-1]
    finally:
        await kp.stop()


async def test_nftables_deletes_flushed_chains_in_a_follow_up_sync(store: SqliteStore) -> None:
    applier = RecordingApplier()
    kp = KubeProxy(KubeProxyParams("lab-node1", Mode.NFTABLES), store, applier)
    await kp.start()
    try:
        await add_service(store, "web", "10.96.0.1", "10.244.1.5")
        # Wait for the backend's rules, not just the service: the EndpointSlice lands after
        # the Service, and a service without endpoints has no chains to flush.
        await eventually(now(lambda: any("10.244.1.5" in load for load in applier.loads)))
        await store.delete("Service", "test", "web")
        await eventually(now(lambda: any("delete chain" in load for load in applier.loads)))
        assert not kp.proxier.pending_deletes and kp.proxier.services == set()
    finally:
        await kp.stop()
