"""The ServiceLB component against a recording fake datapath on a real sqlite store: deltas
follow the store, the node's InternalIP becomes a NodePort frontend, and a failed write is
repaired by a full pass (prune to the desired content)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from pylium.loadbalancer.lbmaps import MAPS, SERVICES, MapDelta
from pylium.loadbalancer.reconciler import ServiceLB, ServiceLBParams
from pylium.operator.endpointslices import desired_slices
from pylium.store.sqlite import SqliteStore
from tests.support import eventually
from tests.unit.loadbalancer.test_endpointslices import pod, service


class FakeMaps:
    """The kernel maps as dicts; `fail` makes the next apply raise."""

    def __init__(self) -> None:
        self.maps: dict[str, dict[bytes, bytes]] = {m: {} for m in MAPS}
        self.fail = 0
        self.prunes = 0

    def apply(self, delta: MapDelta) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("injected")
        for m in MAPS:
            self.maps[m].update(delta.upserts[m])
            for key in delta.deletes[m]:
                self.maps[m].pop(key, None)

    def prune(self, desired: Mapping[str, Mapping[bytes, bytes]]) -> MapDelta:
        self.prunes += 1
        self.maps = {m: dict(desired.get(m, {})) for m in MAPS}
        return MapDelta()

    def contents(self) -> dict[str, dict[bytes, bytes]]:
        return {m: dict(v) for m, v in self.maps.items()}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.db", poll_interval=0.01)
    try:
        yield s
    finally:
        await s.close()


NODE = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {"name": "lab-node1"},
    "status": {"addresses": [{"type": "InternalIP", "address": "192.168.10.2"}]},
}


async def test_services_follow_the_store_and_failures_are_repaired(store: SqliteStore) -> None:
    fake = FakeMaps()
    lb = ServiceLB(ServiceLBParams("lab-node1", resync_interval=3600), store, fake)
    await lb.start()
    try:
        await store.create(NODE)
        svc = service(type="NodePort", clusterIP="10.96.0.1")
        svc["spec"]["ports"][0]["nodePort"] = 30080
        await store.create(svc)
        for sl in desired_slices(svc, [pod("a", "10.244.1.5"), pod("b", "10.244.1.6")]) or []:
            await store.create(sl)

        async def synced() -> bool:
            return fake.maps == lb.maps.encoded() and len(fake.maps[SERVICES]) == 9

        await eventually(synced)  # 3 frontends (ClusterIP, 0.0.0.0 and node IP) x 3 slots
        assert "ADDR=192.168.10.2:30080/TCP SLOT=0" in lb.maps.dump()
        dump = lb.dump()
        assert dump["inSync"] and dump["kernel"]["services"] == 9
        assert any("ADDR=10.96.0.1:80/TCP SLOT=0" in line for line in dump["maps"])

        fake.fail = 1  # the write of the next change is lost...
        await store.delete("Service", "test", "web")

        async def emptied() -> bool:
            return lb.maps.empty() and not any(fake.maps.values())

        await eventually(emptied)
        assert fake.prunes >= 2  # ...and a full pass put the maps right
    finally:
        await lb.stop()
