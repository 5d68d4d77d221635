"""The Node reconciler on a real sqlite store, in each IPAM mode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pylium.ipam.sources import IpamMode
from pylium.operator.ledger import CIDRLedger
from pylium.operator.nodeipam import NodeIpamReconciler, operator_error
from pylium.operator.podcidr import parse_pools
from pylium.store import NotFound, Object
from pylium.store.sqlite import SqliteStore
from tests.support import eventually

Runner = Callable[..., Awaitable[NodeIpamReconciler]]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.db", poll_interval=0.01)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def run_reconciler(store: SqliteStore) -> AsyncIterator[Runner]:
    """Start reconcilers on `store`; each is cancelled at the end of the test."""
    tasks: list[asyncio.Task[None]] = []

    async def start(
        mode: IpamMode = IpamMode.CLUSTER_POOL, pool: str = "10.244.0.0/16", mask: int = 24
    ) -> NodeIpamReconciler:
        pools = parse_pools([pool], mask)
        ledger = None if mode == IpamMode.CRD else CIDRLedger(store, pools, mask)
        rec = NodeIpamReconciler(store, mode, ledger, resync_interval=3600)
        tasks.append(asyncio.create_task(rec.run()))
        await rec.wait_synced()
        return rec

    try:
        yield start
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def node(name: str, **spec: Any) -> Object:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": spec}


async def cilium_node(store: SqliteStore, name: str) -> Object | None:
    try:
        return await store.get("CiliumNode", "", name)
    except NotFound:
        return None


async def pod_cidrs(store: SqliteStore) -> dict[str, list[str]]:
    """CiliumNode name -> spec.ipam.podCIDRs."""
    objs, _ = await store.list("CiliumNode")
    return {
        o["metadata"]["name"]: ((o.get("spec") or {}).get("ipam") or {}).get("podCIDRs", [])
        for o in objs
    }


async def test_three_nodes_three_distinct_cidrs_then_reclaim(store, run_reconciler):
    """3 Nodes get 3 CiliumNodes with distinct pod CIDRs; deleting one removes its CiliumNode
    and its CIDR goes to the next new node."""
    await run_reconciler()
    for name in ("n1", "n2", "n3"):
        await store.create(node(name))

    async def three() -> dict[str, list[str]] | None:
        got = await pod_cidrs(store)
        return got if len(got) == 3 and all(got.values()) else None

    got = await eventually(three)
    assert sorted(c for cidrs in got.values() for c in cidrs) == [
        "10.244.0.0/24",
        "10.244.1.0/24",
        "10.244.2.0/24",
    ]
    freed = got["n2"][0]

    await store.delete("Node", "", "n2")

    async def n2_gone() -> bool:
        return await cilium_node(store, "n2") is None

    await eventually(n2_gone)
    await store.create(node("n4"))

    async def n4_cidr() -> list[str] | None:
        return (await pod_cidrs(store)).get("n4") or None

    assert await eventually(n4_cidr) == [freed]
    ledger = CIDRLedger(store, parse_pools(["10.244.0.0/16"], 24), 24)
    assert sorted((await ledger.assignments()).values()) == ["n1", "n3", "n4"]


async def test_existing_assignment_is_kept_and_restart_is_stable(store, run_reconciler):
    """A CiliumNode that already has a pod CIDR keeps it (adopted into the ledger), and an
    operator restarted later changes no assignment."""
    await store.create(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNode",
            "metadata": {"name": "lab-node1"},
            "spec": {"ipam": {"podCIDRs": ["10.244.1.0/24"]}},
        }
    )
    await store.create(node("lab-node1"))
    await store.create(node("lab-node2"))
    first = await run_reconciler()

    async def both() -> dict[str, list[str]] | None:
        got = await pod_cidrs(store)
        return got if len(got) == 2 and all(got.values()) else None

    assert await eventually(both) == {
        "lab-node1": ["10.244.1.0/24"],
        "lab-node2": ["10.244.0.0/24"],
    }
    await first.resync()
    revision = await store.revision()
    second = await run_reconciler()
    await second.resync()
    assert await pod_cidrs(store) == {
        "lab-node1": ["10.244.1.0/24"],
        "lab-node2": ["10.244.0.0/24"],
    }
    assert await store.revision() == revision  # nothing rewritten


async def test_resync_frees_what_nodes_deleted_while_down_held(store, run_reconciler):
    """A CiliumNode and a ledger entry left by a Node deleted while no operator ran are
    removed when two resyncs in a row find them orphaned; the freed CIDR is handed out
    again."""
    ledger = CIDRLedger(store, parse_pools(["10.244.0.0/16"], 24), 24)
    await ledger.assign("ghost")
    await store.create(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNode",
            "metadata": {"name": "ghost"},
            "spec": {"ipam": {"podCIDRs": ["10.244.0.0/24"]}},
        }
    )
    rec = await run_reconciler()
    await rec.resync()  # a first glance only marks
    assert await cilium_node(store, "ghost") is not None
    assert await ledger.assignments() == {"10.244.0.0/24": "ghost"}
    await rec.resync()
    assert await cilium_node(store, "ghost") is None
    assert await ledger.assignments() == {}
    await store.create(node("real"))

    async def real() -> list[str] | None:
        return (await pod_cidrs(store)).get("real") or None

    assert await eventually(real) == ["10.244.0.0/24"]


async def test_exhaustion_reported_then_cleared_when_a_cidr_frees(store, run_reconciler):
    """With room for two nodes, the third's CiliumNode carries operator-status.error; once a
    node is deleted it gets the freed CIDR and the error is cleared."""
    await run_reconciler(pool="10.244.0.0/24", mask=25)
    await store.create(node("a"))
    await store.create(node("b"))

    async def two() -> bool:
        got = await pod_cidrs(store)
        return bool(got.get("a")) and bool(got.get("b"))

    await eventually(two)
    await store.create(node("c"))

    async def c_error() -> str | None:
        cn = await cilium_node(store, "c")
        return operator_error(cn) if cn else None

    assert "no free /25 left" in await eventually(c_error)
    freed = (await pod_cidrs(store))["a"]
    await store.delete("Node", "", "a")

    async def c_cidr() -> Object | None:
        cn = await cilium_node(store, "c")
        return cn if cn and cn["spec"].get("ipam", {}).get("podCIDRs") else None

    cn = await eventually(c_cidr)
    assert cn["spec"]["ipam"]["podCIDRs"] == freed
    assert operator_error(cn) is None


async def test_agent_status_survives_operator_writes(store, run_reconciler):
    """The operator's writes keep what the agent reported in status.ipam."""
    await store.create(node("n1", podCIDR="10.1.0.0/24"))
    await store.create(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNode",
            "metadata": {"name": "n1"},
            "spec": {},
            "status": {"ipam": {"usedCount": 3, "operator-status": {"error": "old"}}},
        }
    )
    await run_reconciler()

    async def done() -> Object | None:
        cn = await cilium_node(store, "n1")
        return cn if cn and operator_error(cn) is None else None

    cn = await eventually(done)
    assert cn["spec"]["ipam"]["podCIDRs"] == ["10.244.0.0/24"]
    assert cn["status"]["ipam"] == {"usedCount": 3}


async def test_kubernetes_mode_writes_node_spec(store, run_reconciler):
    """In kubernetes mode the pod CIDR goes into Node.spec.podCIDR/podCIDRs (node-ipam's job),
    a CIDR a Node already has is kept, and the CiliumNode exists without podCIDRs."""
    await store.create(node("keep", podCIDRs=["10.244.0.0/24"]))
    await run_reconciler(mode=IpamMode.KUBERNETES)
    await store.create(node("fresh"))

    async def fresh_spec() -> dict[str, Any] | None:
        spec = (await store.get("Node", "", "fresh")).get("spec") or {}
        return spec if spec.get("podCIDRs") else None

    assert await eventually(fresh_spec) == {
        "podCIDR": "10.244.1.0/24",
        "podCIDRs": ["10.244.1.0/24"],
    }
    keep = await store.get("Node", "", "keep")
    assert keep["spec"] == {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}
    assert await pod_cidrs(store) == {"fresh": [], "keep": []}


async def test_crd_mode_leaves_ipam_alone(store, run_reconciler):
    """In crd mode the operator creates the CiliumNode but allocates nothing, keeps a pool an
    outside controller wrote, and deletes the CiliumNode with its Node."""
    pool = {"10.9.0.5": {"resource": "eni-1"}}
    await store.create(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNode",
            "metadata": {"name": "pooled"},
            "spec": {"ipam": {"pool": pool}},
        }
    )
    await store.create(node("pooled"))
    await store.create(node("bare"))
    await run_reconciler(mode=IpamMode.CRD)

    async def bare() -> Object | None:
        return await cilium_node(store, "bare")

    assert (await eventually(bare))["spec"] == {}
    assert (await store.get("CiliumNode", "", "pooled"))["spec"] == {"ipam": {"pool": pool}}
    assert (await store.get("Node", "", "bare"))["spec"] == {}
    await store.delete("Node", "", "pooled")

    async def pooled_gone() -> bool:
        return await cilium_node(store, "pooled") is None

    await eventually(pooled_gone)


async def test_two_operators_agree(store, tmp_path):
    """Two reconcilers on two connections to one store (two operators) give 8 nodes 8
    distinct pod CIDRs, each CiliumNode carrying what the ledger recorded for it."""
    other = SqliteStore(tmp_path / "store.db", poll_interval=0.01)
    pools = parse_pools(["10.244.0.0/16"], 24)
    recs = [
        NodeIpamReconciler(s, IpamMode.CLUSTER_POOL, CIDRLedger(s, pools, 24), 3600)
        for s in (store, other)
    ]
    tasks = [asyncio.create_task(r.run()) for r in recs]
    try:
        for i in range(8):
            await store.create(node(f"n{i}"))

        async def all_assigned() -> dict[str, list[str]] | None:
            got = await pod_cidrs(store)
            return got if len(got) == 8 and all(got.values()) else None

        got = await eventually(all_assigned)
        await asyncio.gather(*(r.resync() for r in recs))
        got = await pod_cidrs(store)
        assert len({c for cidrs in got.values() for c in cidrs}) == 8
        ledger = await CIDRLedger(store, pools, 24).assignments()
        assert {n: [c] for c, n in ledger.items()} == got
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await other.close()
