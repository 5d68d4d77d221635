"""The operator's Service components on a sqlite store: a Service written without admission
gets its ClusterIP from `--service-cluster-ip-range` and a LoadBalancer IP from `--lb-pool`, and
its pods show up in an EndpointSlice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pylium.operator.cells import Operator, OperatorParams
from pylium.store import Object
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


async def test_services_get_addresses_and_slices(store: SqliteStore) -> None:
    operator = Operator(
        OperatorParams(
            store_url="unused",
            service_cidr="10.100.0.0/24",
            lb_pools=("198.51.100.0/30",),
        ),
        store=store,
    )
    await operator.start()
    try:
        await store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "test"}})
        await store.create(pod("a", "10.244.1.5"))
        await store.create(pod("b", "10.244.2.7"))
        await store.create(service(type="LoadBalancer"))

        async def assigned() -> Object | None:
            svc = await store.get("Service", "test", "web")
            ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress")
            return svc if ingress and svc["spec"].get("clusterIP") else None

        svc = await eventually(assigned, timeout=5)
        assert svc["spec"]["clusterIP"] == "10.100.0.1"
        assert svc["status"]["loadBalancer"]["ingress"] == [{"ip": "198.51.100.1"}]

        async def slice_addresses() -> list[str] | None:
            slices, _ = await store.list("EndpointSlice", "test")
            return sorted(a for s in slices for e in s["endpoints"] for a in e["addresses"])

        assert await eventually(slice_addresses, timeout=5) == ["10.244.1.5", "10.244.2.7"]
    finally:
        await operator.stop()


def test_bad_service_flags_fail_before_any_io() -> None:
    for params in (
        OperatorParams(store_url="unused", service_cidr="10.96.0.0/33"),
        OperatorParams(store_url="unused", lb_pools=("nope",)),
        OperatorParams(store_url="unused", node_ports=(32767, 30000)),
    ):
        with pytest.raises(ValueError):
            Operator(params)
