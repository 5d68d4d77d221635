"""The agent in each IPAM mode (`--ipam`), without root: where its addresses come from, what it
hands out, and the usage it reports in CiliumNode status.ipam."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pylium.agent.cells import Agent, AgentParams
from pylium.agent.client import AgentClient
from pylium.ipam import IpamMode
from pylium.store import Object, Store, open_store
from tests.support import eventually
from tests.unit.endpoint.fakes import FakeDatapath, FakeNetlink
from tests.unit.hubble.test_observer import FakeReader
from tests.unit.routing.test_component import FakeKernel


class Node:
    """One agent on a fake netlink/datapath over a real sqlite store."""

    def __init__(self, root: Path, store: Store, mode: IpamMode) -> None:
        self.store = store
        self.nl = FakeNetlink()
        self.dp = FakeDatapath()
        self.agent = Agent(
            AgentParams(
                node="n1",
                store_url="unused",
                socket=root / "agent.sock",
                state_dir=root / "state",
                bpf_dir=root / "bpf",
                ipam=mode,
                status_interval=0.02,
            ),
            store=store,
            netlink=self.nl,
            datapath=self.dp,
            open_events=FakeReader,
            route_kernel=FakeKernel(),  # never the root netns's routes
        )
        self.client = AgentClient(root / "agent.sock", timeout=5)


@pytest.fixture
async def start() -> AsyncIterator[Any]:
    root = Path(tempfile.mkdtemp(prefix="pyl-to-"))  # short: unix socket paths max 107 bytes
    store = open_store(f"sqlite://{root}/store.db")
    nodes: list[Node] = []

    async def run(mode: IpamMode, *objects: Object) -> Node:
        for obj in objects:
            await store.create(obj)
        node = Node(root, store, mode)
        nodes.append(node)
        await asyncio.wait_for(node.agent.start(), 5)
        return node

    try:
        yield run
    finally:
        for node in nodes:
            await node.agent.stop()
        shutil.rmtree(root)


async def ipam_status(store: Store) -> dict[str, Any] | None:
    obj = await store.get("CiliumNode", "", "n1")
    return (obj.get("status") or {}).get("ipam")


async def test_kubernetes_mode_uses_node_spec_pod_cidrs(start):
    """--ipam kubernetes takes the pod CIDR from Node.spec.podCIDRs, not the CiliumNode."""
    node = await start(
        IpamMode.KUBERNETES,
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1"},
            "spec": {"podCIDRs": ["10.244.7.0/24"]},
        },
        {"apiVersion": "cilium.io/v2", "kind": "CiliumNode", "metadata": {"name": "n1"}},
    )
    got = await asyncio.to_thread(node.client.ipam_allocate, "o1")
    assert (got["ip"], got["cidr"], got["gateway"]) == ("10.244.7.2", "10.244.7.0/24", "10.244.7.1")
    assert node.dp.node == ("10.244.7.1", "10.244.7.0/24")


async def test_crd_mode_allocates_from_the_pool_and_reports_usage(start):
    """--ipam crd hands out the addresses of CiliumNode.spec.ipam.pool (the lowest is the
    router), reports no CIDR, and publishes used/available into status.ipam."""
    pool = {f"10.9.0.{i}": {"resource": "eni-1"} for i in (4, 8, 12)}
    node = await start(
        IpamMode.CRD,
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNode",
            "metadata": {"name": "n1"},
            "spec": {"ipam": {"pool": pool}},
        },
    )
    assert node.nl.router_ip == "10.9.0.4"
    got = await asyncio.to_thread(node.client.ipam_allocate, "o1")
    assert (got["ip"], got["cidr"], got["gateway"]) == ("10.9.0.8", None, "10.9.0.4")

    async def published() -> dict[str, Any] | None:
        status = await ipam_status(node.store)
        return status if status and status.get("usedCount") == 1 else None

    status = await eventually(published)
    assert status["used"] == {"10.9.0.8": {"owner": "o1"}}
    assert status["available"] == 1
    assert status["podCIDR"] is None
