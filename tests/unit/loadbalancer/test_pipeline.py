"""The whole control plane on one sqlite store: a Service and Pods go in; the admission
allocator, ServiceIPAM and the EndpointSlice controller fill in addresses and slices; a node's
ServiceTable fed by Reflectors produces the LB maps and kube-proxy rules; deleting the Service
empties them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from pylium.api import InvalidObject
from pylium.loadbalancer.lbmaps import LBMaps, LBParams
from pylium.loadbalancer.serviceipam import ServiceIPAM, admit, forget
from pylium.loadbalancer.servicetable import ServiceTable
from pylium.operator.endpointslices import EndpointSliceController
from pylium.store import Event
from pylium.store.reflector import Reflector
from pylium.store.sqlite import SqliteStore
from tests.support import eventually
from tests.unit.loadbalancer.test_endpointslices import pod, service


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.db", poll_interval=0.01)
    try:
        yield s
    finally:
        await s.close()


async def test_service_to_lb_maps(store: SqliteStore) -> None:
    """Pods behind a NodePort service end up as backends of every frontend of the node."""
    table = ServiceTable()
    maps = LBMaps(LBParams("lab-node1", (IPv4Address("192.168.10.2"),)))

    def on_service(event: Event) -> None:
        (table.delete_service if event.type == "DELETED" else table.upsert_service)(event.object)

    def on_slice(event: Event) -> None:
        (table.delete_slice if event.type == "DELETED" else table.upsert_slice)(event.object)

    components = [
        EndpointSliceController(store, resync_interval=3600).run(),
        ServiceIPAM(store, resync_interval=3600).run(),
        Reflector(store, "Service").run(on_service),
        Reflector(store, "EndpointSlice").run(on_slice),
    ]
    tasks = [asyncio.create_task(c) for c in components]
    try:
        svc = await admit(store, service(type="NodePort"))
        assert svc["spec"]["clusterIP"] == "10.96.0.1"
        await store.create(svc)
        with pytest.raises(InvalidObject, match="provided IP is already allocated"):
            other = service(clusterIP="10.96.0.1")
            other["metadata"]["name"] = "other"
            await admit(store, other)
        await store.create(pod("a", "10.244.1.5"))
        await store.create(pod("b", "10.244.1.6"))

        async def dump() -> str | None:
            maps.sync(table.take_changes())
            text = maps.dump()
            return text if text.count("STATE=active") == 2 else None

        text = await eventually(dump)
        for frontend in ("10.96.0.1:80/TCP", "0.0.0.0:30000/TCP", "192.168.10.2:30000/TCP"):
            assert f"ADDR={frontend} SLOT=0 LBALG=undef AFFTimeout=0 COUNT=2" in text
        await store.delete("Service", "test", "web")
        await forget(store, "Service", "test", "web")

        async def emptied() -> bool:
            maps.sync(table.take_changes())
            return maps.empty()

        await eventually(emptied)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
