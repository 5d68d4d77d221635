"""Service allocation: ClusterIPs from the service CIDR, NodePorts from 30000-32767, LB IPs
from pools; requested values checked with field-named errors; never one value twice, also when
writers race on one store; the operator component fills, assigns and frees."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest

from pylium.api import InvalidObject
from pylium.loadbalancer.allocation import (
    Allocations,
    Ranges,
    assign_load_balancer,
    assign_service,
)
from pylium.loadbalancer.serviceipam import ServiceIPAM, ServiceLedger, pool_blocks
from pylium.store import Object
from pylium.store.sqlite import SqliteStore
from tests.support import eventually


def svc(name: str, **spec: Any) -> Object:
    spec.setdefault("ports", [{"name": "http", "port": 80}])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "test"},
        "spec": spec,
    }


def test_cluster_ip_and_node_ports_are_filled_lowest_first() -> None:
    """The first free ClusterIP and NodePort are taken; a re-apply keeps them; another
    service gets the next ones."""
    alloc = Allocations()
    a = assign_service(alloc, Ranges(), svc("a", type="NodePort"))
    assert a["spec"]["clusterIP"] == "10.96.0.1" and a["spec"]["clusterIPs"] == ["10.96.0.1"]
    assert a["spec"]["ports"][0]["nodePort"] == 30000
    again = assign_service(alloc, Ranges(), svc("a", type="NodePort"))
    assert again["spec"] == a["spec"]
    b = assign_service(alloc, Ranges(), svc("b", type="NodePort"))
    assert (b["spec"]["clusterIP"], b["spec"]["ports"][0]["nodePort"]) == ("10.96.0.2", 30001)


def test_type_change_frees_node_ports() -> None:
    """Going back to ClusterIP frees the NodePort for the next service."""
    alloc = Allocations()
    assign_service(alloc, Ranges(), svc("a", type="NodePort"))
    assign_service(alloc, Ranges(), svc("a"))
    b = assign_service(alloc, Ranges(), svc("b", type="NodePort"))
    assert b["spec"]["ports"][0]["nodePort"] == 30000


@pytest.mark.parametrize(
    "spec,message",
    [
        (
            {"clusterIP": "10.96.0.1"},
            'spec.clusterIPs[0]: Invalid value: "10.96.0.1": provided IP is already allocated',
        ),
        (
            {"clusterIP": "10.97.0.1"},
            "the provided IP (10.97.0.1) is not in the valid range. The range of valid IPs"
            " is 10.96.0.0/16",
        ),
        (
            {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30000}]},
            "spec.ports[0].nodePort: Invalid value: 30000: provided port is already allocated",
        ),
        (
            {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]},
            "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid"
            " range. The range of valid ports is 30000-32767",
        ),
    ],
)
def test_requested_values_are_checked(spec: dict[str, Any], message: str) -> None:
    """A taken or out-of-range request fails naming the field, and changes nothing."""
    alloc = Allocations()
    assign_service(alloc, Ranges(), svc("a", type="NodePort"))
    before = Allocations(dict(alloc.cluster_ips), dict(alloc.node_ports), dict(alloc.lb_ips))
    with pytest.raises(InvalidObject) as err:
        assign_service(alloc, Ranges(), svc("b", **spec))
    assert message in str(err.value)
    assert alloc == before


def test_load_balancer_ips_from_pools() -> None:
    """LB IPs come from the pools (first and last of a block skipped), a requested IP is
    honoured, an exhausted pool is reported in a condition."""
    alloc = Allocations()
    pools = [IPv4Network("172.18.255.0/30")]
    a = assign_load_balancer(alloc, pools, svc("a", type="LoadBalancer"))
    assert a["status"]["loadBalancer"] == {"ingress": [{"ip": "172.18.255.1"}]}
    b = assign_load_balancer(alloc, pools, svc("b", type="LoadBalancer"))
    assert b["status"]["loadBalancer"]["ingress"][0]["ip"] == "172.18.255.2"
    c = assign_load_balancer(alloc, pools, svc("c", type="LoadBalancer"))
    assert "loadBalancer" not in c["status"]
    (cond,) = c["status"]["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == (
        "cilium.io/IPAMRequestSatisfied", "False", "out_of_ips",
    )  # fmt: skip
    a2 = assign_load_balancer(alloc, pools, svc("a"))
    assert "loadBalancer" not in a2["status"] and "172.18.255.1" not in alloc.lb_ips
    d = assign_load_balancer(
        alloc, pools, svc("d", type="LoadBalancer", loadBalancerIP="172.18.255.1")
    )
    assert d["status"]["loadBalancer"]["ingress"][0]["ip"] == "172.18.255.1"


def test_pool_objects() -> None:
    """CiliumLoadBalancerIPPool blocks are read; disabled pools are not."""
    pools = [
        {"metadata": {"name": "b"}, "spec": {"blocks": [{"cidr": "172.18.1.0/24"}]}},
        {"metadata": {"name": "a"}, "spec": {"cidrs": [{"cidr": "172.18.0.0/24"}]}},
        {"metadata": {"name": "c"}, "spec": {"disabled": True, "blocks": [{"cidr": "1.0.0.0/8"}]}},
    ]
    assert pool_blocks(pools) == [IPv4Network("172.18.0.0/24"), IPv4Network("172.18.1.0/24")]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.db", poll_interval=0.01)
    try:
        yield s
    finally:
        await s.close()


async def test_racing_writers_never_share_an_ip(store: SqliteStore) -> None:
    """Two ledgers on one store allocating 20 services each at once hand out 40 distinct
    ClusterIPs and NodePorts."""
    one, two = ServiceLedger(store), ServiceLedger(store)
    results = await asyncio.gather(
        *(one.allocate(svc(f"a{i}", type="NodePort")) for i in range(20)),
        *(two.allocate(svc(f"b{i}", type="NodePort")) for i in range(20)),
    )
    ips = {r["spec"]["clusterIP"] for r in results}
    ports = {r["spec"]["ports"][0]["nodePort"] for r in results}
    assert len(ips) == 40 and len(ports) == 40
    recorded = await one.allocations()
    assert set(recorded.cluster_ips) == ips


async def test_operator_component(store: SqliteStore) -> None:
    """ServiceIPAM fills a service stored without a ClusterIP, gives a LoadBalancer service
    an IP from a CiliumLoadBalancerIPPool, and frees both when the services go."""
    ipam = ServiceIPAM(store, resync_interval=3600)
    task = asyncio.create_task(ipam.run())
    try:
        await store.create(
            {
                "apiVersion": "cilium.io/v2alpha1",
                "kind": "CiliumLoadBalancerIPPool",
                "metadata": {"name": "lab"},
                "spec": {"blocks": [{"cidr": "172.18.255.0/24"}]},
            }
        )
        await store.create(svc("plain"))
        await store.create(svc("lb", type="LoadBalancer"))

        async def filled() -> Object | None:
            lb = await store.get("Service", "test", "lb")
            plain = await store.get("Service", "test", "plain")
            ok = plain["spec"].get("clusterIP") and (lb.get("status") or {}).get("loadBalancer")
            return lb if ok else None

        lb = await eventually(filled)
        assert lb["status"]["loadBalancer"]["ingress"] == [{"ip": "172.18.255.1"}]
        assert lb["spec"]["ports"][0]["nodePort"] == 30000
        await store.delete("Service", "test", "lb")
        await store.delete("Service", "test", "plain")

        async def freed() -> bool:
            a = await ipam.ledger.allocations()
            return not a.cluster_ips and not a.node_ports and not a.lb_ips

        await eventually(freed)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_repair_waits_one_resync_before_freeing(store: SqliteStore) -> None:
    """An allocation without a Service survives the first resync (it may be an apply in
    flight) and is freed by the second."""
    ipam = ServiceIPAM(store, resync_interval=3600)
    await ipam.ledger.allocate(svc("inflight"))
    await ipam.resync()
    assert (await ipam.ledger.allocations()).cluster_ips == {"10.96.0.1": "test/inflight"}
    await ipam.resync()
    assert (await ipam.ledger.allocations()).cluster_ips == {}
