"""The agent runs the node routes in native routing, and not in tunnel routing."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from pylium.agent.cells import Agent, AgentParams
from pylium.routing import NodeRoute, RoutingMode
from pylium.store import open_store
from tests.support import eventually
from tests.unit.endpoint.fakes import FakeDatapath, FakeNetlink
from tests.unit.hubble.test_observer import FakeReader
from tests.unit.routing.test_component import FakeKernel, cilium_node


@pytest.mark.parametrize("mode", list(RoutingMode))
async def test_that_only_native_routing_routes_the_other_nodes_pod_cidrs(mode):
    root = Path(tempfile.mkdtemp(prefix="pyl-tr-"))  # short: unix socket paths max 107 bytes
    store = open_store(f"sqlite://{root}/store.db")
    await store.create(cilium_node("n1", "10.244.1.0/24", "192.168.64.2"))
    await store.create(cilium_node("n2", "10.244.2.0/24", "192.168.64.3"))
    kernel = FakeKernel()
    agent = Agent(
        AgentParams(
            node="n1",
            store_url="unused",
            socket=root / "agent.sock",
            state_dir=root / "state",
            bpf_dir=root / "bpf",
            routing_mode=mode,
        ),
        store=store,
        netlink=FakeNetlink(),
        datapath=FakeDatapath(),
        open_events=FakeReader,
        route_kernel=kernel,
    )
    try:
        await agent.start()
        if mode is RoutingMode.NATIVE:
            other = NodeRoute("10.244.2.0/24", "192.168.64.3")
            assert await eventually(lambda: _routes(kernel), timeout=5) == {other}
        else:
            assert await _routes(kernel) == set() and kernel.calls == []
    finally:
        await agent.stop()
        shutil.rmtree(root)


async def _routes(kernel: FakeKernel) -> set[NodeRoute]:
    return await kernel.routes()
