"""NodeRoutes over a real (sqlite) store and an in-memory kernel: routes follow the objects,
stale and changed ones are fixed, foreign routes are never touched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pylium.routing import NodeRoute, NodeRoutes, RoutesParams
from pylium.store import Store, open_store
from tests.support import eventually


class FakeKernel:
    """Our routes, keyed by destination, plus a record of every call."""

    def __init__(self) -> None:
        self.table: dict[str, str] = {}
        self.calls: list[tuple[str, NodeRoute]] = []
        self.fail_next = 0

    async def routes(self) -> set[NodeRoute]:
        return {NodeRoute(dst, gw) for dst, gw in self.table.items()}

    async def replace(self, route: NodeRoute) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("netlink says no")
        self.calls.append(("replace", route))
        self.table[route.dst] = route.gateway

    async def delete(self, route: NodeRoute) -> None:
        self.calls.append(("delete", route))
        if self.table.get(route.dst) == route.gateway:
            del self.table[route.dst]


def cilium_node(name: str, cidr: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNode",
        "metadata": {"name": name},
        "spec": {"ipam": {"podCIDRs": [cidr]}, "addresses": [{"type": "InternalIP", "ip": ip}]},
    }


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(f"sqlite://{tmp_path}/store.db")
    try:
        yield s
    finally:
        await s.close()


async def test_routes_follow_cilium_nodes(store: Store) -> None:
    kernel = FakeKernel()
    kernel.table["10.244.9.0/24"] = "192.168.64.9"  # ours, but no node wants it any more
    await store.create(cilium_node("n1", "10.244.0.0/24", "192.168.64.2"))
    await store.create(cilium_node("n2", "10.244.1.0/24", "192.168.64.3"))
    routes = NodeRoutes(RoutesParams(node="n1"), store, kernel)
    await routes.start()
    try:
        await eventually(lambda: _eq(kernel.table, {"10.244.1.0/24": "192.168.64.3"}), timeout=5)
        await store.create(cilium_node("n3", "10.244.2.0/24", "192.168.64.4"))
        await eventually(lambda: _has(kernel.table, "10.244.2.0/24", "192.168.64.4"), timeout=5)
        moved = await store.get("CiliumNode", "", "n2")
        moved["spec"]["addresses"][0]["ip"] = "192.168.64.30"
        await store.update(moved)
        await eventually(lambda: _has(kernel.table, "10.244.1.0/24", "192.168.64.30"), timeout=5)
        # a changed gateway is replaced, never deleted (that would cut traffic meanwhile)
        assert ("delete", NodeRoute("10.244.1.0/24", "192.168.64.3")) not in kernel.calls
        await store.delete("CiliumNode", "", "n3")
        await eventually(lambda: _eq(kernel.table, {"10.244.1.0/24": "192.168.64.30"}), timeout=5)
    finally:
        await routes.stop()
    assert ("delete", NodeRoute("10.244.9.0/24", "192.168.64.9")) in kernel.calls


async def test_a_failed_pass_is_retried(store: Store) -> None:
    kernel = FakeKernel()
    kernel.fail_next = 2
    await store.create(cilium_node("n2", "10.244.1.0/24", "192.168.64.3"))
    routes = NodeRoutes(RoutesParams(node="n1", retry_max=0.2), store, kernel)
    await routes.start()
    try:
        await eventually(lambda: _eq(kernel.table, {"10.244.1.0/24": "192.168.64.3"}), timeout=5)
        assert routes.installed == {NodeRoute("10.244.1.0/24", "192.168.64.3")}
    finally:
        await routes.stop()


async def _eq(table: dict[str, str], want: dict[str, str]) -> bool:
    return table == want


async def _has(table: dict[str, str], dst: str, gateway: str) -> bool:
    return table.get(dst) == gateway
