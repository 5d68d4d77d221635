"""An in-memory `Netlink` that behaves like the kernel for what the agent does with it:
veth pairs whose ends live in namespaces, delete taking the peer (and its routes and
addresses) with it, EEXIST on names, one route per destination and table, a gateway needing
an on-link route through the same device (ENETUNREACH), policy rules. `fail_on` injects an
error into the next call of a named operation, so tests can walk roll-back step by step.
`FakeDatapath` stands in for the BPF endpoint datapath the same way."""

from __future__ import annotations

import errno
import itertools
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

from pylium.datapath.endpoints import CtSample, EndpointRow, MetricSample
from pylium.datapath.netlink import (
    MAIN_TABLE,
    Link,
    LinkExists,
    LinkNotFound,
    NetnsNotFound,
    Route,
    Rule,
)

_indexes = itertools.count(10)


@dataclass
class FakeLink:
    name: str
    index: int
    mac: str
    mtu: int
    up: bool = False
    peer: FakeLink | None = None
    ns: FakeNetns | None = None
    addresses: list[str] = field(default_factory=list)

    def view(self) -> Link:
        return Link(self.name, self.index, self.mac, self.mtu, self.up)


class InjectedFailure(Exception):
    """Raised by an operation `fail_on` named."""


class FakeNetns:
    def __init__(self, owner: FakeNetlink, name: str) -> None:
        self._owner = owner
        self.name = name
        self.by_name: dict[str, FakeLink] = {}
        self.route_table: list[Route] = []
        self.rule_list: list[Rule] = []
        self.add_link(FakeLink("lo", 1, "00:00:00:00:00:00", 65536))

    def add_link(self, link: FakeLink) -> None:
        link.ns = self
        self.by_name[link.name] = link

    def _get(self, name: str) -> FakeLink:
        try:
            return self.by_name[name]
        except KeyError:
            raise LinkNotFound(f"no interface {name!r}") from None

    def _drop(self, link: FakeLink) -> None:
        del self.by_name[link.name]
        self.route_table = [r for r in self.route_table if r.dev != link.name]

    async def link(self, name: str) -> Link | None:
        self._owner.maybe_fail("link")
        found = self.by_name.get(name)
        return None if found is None else found.view()

    async def links(self) -> list[Link]:
        return [link.view() for link in self.by_name.values()]

    async def add_veth(
        self,
        name: str,
        peer: str,
        mtu: int,
        *,
        peer_netns: str | None = None,
        peer_mac: str | None = None,
    ) -> Link:
        self._owner.maybe_fail("add_veth")
        peer_ns = self if peer_netns is None else self._owner.namespaces.get(peer_netns)
        if peer_ns is None:
            raise NetnsNotFound(str(peer_netns))
        if name in self.by_name or peer in peer_ns.by_name:
            raise LinkExists(name)
        a = FakeLink(name, next(_indexes), self._owner.next_mac(), mtu)
        b = FakeLink(peer, next(_indexes), peer_mac or self._owner.next_mac(), mtu)
        a.peer, b.peer = b, a
        self.add_link(a)
        peer_ns.add_link(b)
        return a.view()

    async def delete_link(self, name: str) -> bool:
        self._owner.maybe_fail("delete_link")
        link = self.by_name.get(name)
        if link is None:
            return False
        self._drop(link)
        if link.peer is not None and link.peer.ns is not None:
            link.peer.ns._drop(link.peer)
        return True

    async def set_link(
        self,
        name: str,
        *,
        new_name: str | None = None,
        mtu: int | None = None,
        mac: str | None = None,
        up: bool | None = None,
    ) -> Link:
        self._owner.maybe_fail("set_link")
        link = self._get(name)
        if new_name is not None and new_name != name:
            if new_name in self.by_name:
                raise LinkExists(new_name)
            del self.by_name[name]
            link.name = new_name
            self.by_name[new_name] = link
        if mtu is not None:
            link.mtu = mtu
        if mac is not None:
            link.mac = mac
        if up is not None:
            link.up = up
        return link.view()

    async def add_address(self, dev: str, cidr: str) -> None:
        self._owner.maybe_fail("add_address")
        link = self._get(dev)
        if cidr not in link.addresses:
            link.addresses.append(cidr)

    async def addresses(self, dev: str) -> list[str]:
        return list(self._get(dev).addresses)

    async def add_route(self, route: Route) -> None:
        self._owner.maybe_fail("add_route")
        self._get(route.dev)
        if route.gateway is not None:
            onlink = Route(f"{route.gateway}/32", route.dev, scope="link", table=route.table)
            if onlink not in self.route_table:
                raise OSError(errno.ENETUNREACH, "Network is unreachable")
        if not any(r.dst == route.dst and r.table == route.table for r in self.route_table):
            self.route_table.append(route)  # the kernel's EEXIST for the same dst is success

    async def delete_route(self, route: Route) -> bool:
        self._owner.maybe_fail("delete_route")
        if route not in self.route_table:
            return False
        self.route_table.remove(route)
        return True

    async def routes(self, dev: str, table: int = MAIN_TABLE) -> list[Route]:
        self._get(dev)
        return [r for r in self.route_table if r.dev == dev and r.table == table]

    async def add_rule(self, rule: Rule) -> None:
        self._owner.maybe_fail("add_rule")
        if rule not in self.rule_list:
            self.rule_list.append(rule)

    async def delete_rule(self, rule: Rule) -> bool:
        if rule not in self.rule_list:
            return False
        self.rule_list.remove(rule)
        return True

    async def rules(self) -> list[Rule]:
        return list(self.rule_list)


class FakeNetlink:
    """A node namespace plus pod namespaces registered by path."""

    def __init__(self) -> None:
        self.namespaces: dict[str, FakeNetns] = {}
        self.node_ns = FakeNetns(self, "node")
        self.router_ip: str | None = None
        self._failures: dict[str, Exception] = {}
        self._macs = itertools.count(1)

    def add_pod_netns(self, path: str) -> FakeNetns:
        ns = FakeNetns(self, path)
        self.namespaces[path] = ns
        return ns

    def remove_pod_netns(self, path: str) -> None:
        ns = self.namespaces.pop(path)
        for link in list(ns.by_name.values()):
            if link.peer is not None and link.peer.ns is not None and link.peer.ns is not ns:
                link.peer.ns._drop(link.peer)  # a veth dies with its namespace, peer too

    def fail_on(self, operation: str, error: Exception | None = None) -> None:
        self._failures[operation] = error or InjectedFailure(operation)

    def maybe_fail(self, operation: str) -> None:
        error = self._failures.pop(operation, None)
        if error is not None:
            raise error

    def next_mac(self) -> str:
        n = next(self._macs)
        return f"02:00:00:00:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}"

    @property
    def node(self) -> FakeNetns:
        return self.node_ns

    @asynccontextmanager
    async def _enter(self, path: str) -> AsyncIterator[FakeNetns]:
        self.maybe_fail("netns")
        ns = self.namespaces.get(path)
        if ns is None:
            raise NetnsNotFound(path)
        yield ns

    def netns(self, path: str) -> AbstractAsyncContextManager[FakeNetns]:
        return self._enter(path)

    async def setup_node(self, router_ip: str) -> None:
        self.router_ip = router_ip


class FakeDatapath:
    """An in-memory `Datapath`: the rows it holds by host-side interface, with the reconciler
    semantics (update idempotent, delete of the absent a success, prune removes the rest).
    `fail_on("update")` makes the next update raise."""

    def __init__(self) -> None:
        self.rows: dict[str, EndpointRow] = {}
        self.node: tuple[str, str] | None = None
        self.pruned: list[str] = []
        self._failures: dict[str, Exception] = {}

    def fail_on(self, operation: str) -> None:
        self._failures[operation] = InjectedFailure(f"datapath {operation}")

    def _maybe_fail(self, operation: str) -> None:
        error = self._failures.pop(operation, None)
        if error is not None:
            raise error

    async def start(self, router_ip: str, pod_cidr: str) -> None:
        self.node = (router_ip, pod_cidr)

    async def stop(self) -> None:
        self.node = None

    async def update(self, row: EndpointRow) -> None:
        self._maybe_fail("update")
        self.rows[row.host_ifname] = row

    async def delete(self, row: EndpointRow) -> None:
        self.rows.pop(row.host_ifname, None)

    async def prune(self, desired: Iterable[EndpointRow]) -> None:
        want = {row.host_ifname for row in desired}
        stale = [name for name in self.rows if name not in want]
        for name in stale:
            del self.rows[name]
        self.pruned += stale

    async def verify(self, row: EndpointRow) -> list[str]:
        if self.rows.get(row.host_ifname) != row:
            return [f"datapath of {row.host_ifname} is missing"]
        return []

    def metrics(self) -> list[MetricSample]:
        return [MetricSample(0, "FORWARDED", "egress", packets=len(self.rows), bytes=0)]

    def conntrack(self) -> list[CtSample]:
        return [
            CtSample("egress", 6, row.ipv4, 1, "10.0.0.1", 80, 60, 1, 60, 0, 0, ("SEEN_REPLY",))
            for row in self.rows.values()
        ]
