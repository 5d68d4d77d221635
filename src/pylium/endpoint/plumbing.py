"""The kernel side of an endpoint: a veth pair between the node and the pod namespace.

Pod side (named CNI_IFNAME): the pod's address as /32, a link-scope route to the node's router
IP and the default route through it, so every packet leaves through the veth whatever its
destination (as Cilium's pods). Node side (`lxc…`): up, and a `<ip>/32` route to it (`route`,
added only once the datapath is configured). The host-side veth is where the datapath attaches
its tc programs (`datapath_row` is what it gets).

A second interface in the same pod (eth1 after eth0) cannot have those routes too: the
gateway is on-link through the first already, so its default route would be refused
(ENETUNREACH). Its two routes go to a table of its own instead (`SOURCE_TABLE_BASE` + endpoint
id), which a rule selects for packets from its address, as the reference `sbr` plugin does:
the pod's own traffic keeps using the first interface, and answers to the second one's address
leave through it (the datapath drops a packet whose source is not its interface's address).

The pod end is created directly inside the pod namespace with its final name (by the path's
fd), not created here and moved: moving a device between namespaces costs ~18 ms on this
kernel, creating it there ~1 ms. Every change is made through the `Netlink` protocol.
Deleting the host-side veth removes the pair, the pod interface and the host route with it, so
one delete undoes any partial ADD.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from pylium.datapath.endpoints import EndpointRow
from pylium.datapath.netlink import (
    MAIN_TABLE,
    LinkExists,
    Netlink,
    Netns,
    NetnsNotFound,
    Route,
    Rule,
)
from pylium.endpoint.model import Endpoint, InterfaceExists, NetnsMissing

Step = Callable[[str], None]
"""Called after each named step of an ADD (the crash-test hook; a no-op in production)."""

SOURCE_TABLE_BASE = 1000
"""A later interface's routes go to table SOURCE_TABLE_BASE + endpoint id (above the kernel's
253-255, unique per node)."""
SOURCE_RULE_PRIORITY = 1000
"""Before the main table's rule (32766)."""


@dataclass(frozen=True)
class Plumbed:
    """What the kernel assigned while plumbing."""

    mac: str
    host_ifindex: int
    host_mac: str
    source_table: int
    """`Endpoint.source_table`: 0, or the table of a later interface's routes."""


async def plumb(nl: Netlink, ep: Endpoint, mac: str | None, step: Step) -> Plumbed:
    """Create and configure the endpoint's veth pair.

    Raises:
        NetnsMissing: the pod namespace does not exist.
        InterfaceExists: `ep.ifname` exists in the pod namespace (it is left untouched).
    """
    host = ep.host_ifname
    try:
        async with nl.netns(ep.netns) as pod:
            if await pod.link(ep.ifname) is not None:
                raise InterfaceExists(f"interface {ep.ifname!r} already exists in {ep.netns}")
            if await _routed_elsewhere(pod, ep.ifname):
                ep = replace(ep, source_table=SOURCE_TABLE_BASE + ep.id)
            try:
                await nl.node.add_veth(host, ep.ifname, ep.mtu, peer_netns=ep.netns, peer_mac=mac)
            except LinkExists as err:
                if await pod.link(ep.ifname) is not None:
                    raise InterfaceExists(
                        f"interface {ep.ifname!r} appeared in {ep.netns} during ADD"
                    ) from err
                raise
            step("veth-created")
            link = await pod.set_link(ep.ifname, up=True)
            await pod.set_link("lo", up=True)
            await pod.add_address(ep.ifname, f"{ep.ipv4}/32")
            for route in pod_routes(ep):
                await pod.add_route(route)
            rule = source_rule(ep)
            if rule is not None:
                await pod.add_rule(rule)
            step("pod-configured")
    except NetnsNotFound as err:
        raise NetnsMissing(str(err)) from err
    host_link = await nl.node.set_link(host, up=True)
    return Plumbed(
        mac=link.mac,
        host_ifindex=host_link.index,
        host_mac=host_link.mac,
        source_table=ep.source_table,
    )


async def route(nl: Netlink, ep: Endpoint, step: Step) -> None:
    """Route the pod's address to its veth: last, once the datapath enforces its policy there
    (before that, a packet the node routes to the pod would pass no policy at all)."""
    await nl.node.add_route(host_route(ep))
    step("host-configured")


async def _routed_elsewhere(pod: Netns, ifname: str) -> bool:
    """Whether another interface of the pod holds a default route already."""
    for link in await pod.links():
        if link.name in (ifname, "lo"):
            continue
        if any(r.dst == "0.0.0.0/0" for r in await pod.routes(link.name)):
            return True
    return False


async def unplumb(nl: Netlink, ep: Endpoint) -> None:
    """Remove the endpoint's veth pair (and with it the pod interface, its routes and the host
    route), and a later interface's source rule.

    Needs no pod namespace, so it works when the pod is gone (its rules went with it)."""
    await nl.node.delete_link(ep.host_ifname)
    rule = source_rule(ep)
    if rule is not None:
        try:
            async with nl.netns(ep.netns) as pod:
                await pod.delete_rule(rule)
        except NetnsNotFound:
            pass


def datapath_row(ep: Endpoint) -> EndpointRow:
    """The endpoint as the datapath sees it (address and ifindex may still be unset in a
    roll-back: the datapath then removes what the row names)."""
    return EndpointRow(
        id=ep.id,
        ipv4=ep.ipv4,
        host_ifname=ep.host_ifname,
        host_ifindex=ep.host_ifindex,
        mac=ep.mac,
        host_mac=ep.host_mac,
        pod_namespace=ep.pod_namespace,
        pod_name=ep.pod_name,
    )


def pod_routes(ep: Endpoint) -> list[Route]:
    """The routes inside the pod: the gateway on-link, then the default through it (in the
    interface's source table when it is not the first)."""
    table = ep.source_table or MAIN_TABLE
    return [
        Route(f"{ep.gateway}/32", ep.ifname, scope="link", table=table),
        Route("0.0.0.0/0", ep.ifname, gateway=ep.gateway, table=table),
    ]


def source_rule(ep: Endpoint) -> Rule | None:
    """The rule sending a later interface's traffic (from its address) to its table."""
    if not ep.source_table or not ep.ipv4:
        return None
    return Rule(f"{ep.ipv4}/32", ep.source_table, SOURCE_RULE_PRIORITY)


def host_route(ep: Endpoint) -> Route:
    """The node's route to the pod."""
    return Route(f"{ep.ipv4}/32", ep.host_ifname)


async def verify(nl: Netlink, ep: Endpoint) -> list[str]:
    """Everything the endpoint needs in the kernel that is missing, named; empty when whole.

    Tolerates extra routes and a changed MAC (chained plugins may add or change those)."""
    problems: list[str] = []
    host = await nl.node.link(ep.host_ifname)
    if host is None:
        problems.append(f"host interface {ep.host_ifname} is missing")
    else:
        if not host.up:
            problems.append(f"host interface {ep.host_ifname} is down")
        if host_route(ep) not in await nl.node.routes(ep.host_ifname):
            problems.append(f"host route {ep.ipv4}/32 dev {ep.host_ifname} is missing")
    try:
        async with nl.netns(ep.netns) as pod:
            link = await pod.link(ep.ifname)
            if link is None:
                problems.append(f"interface {ep.ifname} is missing in {ep.netns}")
                return problems
            if not link.up:
                problems.append(f"interface {ep.ifname} is down in {ep.netns}")
            if f"{ep.ipv4}/32" not in await pod.addresses(ep.ifname):
                problems.append(f"address {ep.ipv4}/32 is missing on {ep.ifname} in {ep.netns}")
            have = await pod.routes(ep.ifname, ep.source_table or MAIN_TABLE)
            for route in pod_routes(ep):
                if route not in have:
                    via = f" via {route.gateway}" if route.gateway else ""
                    table = f" table {route.table}" if ep.source_table else ""
                    problems.append(
                        f"route {route.dst}{via} dev {ep.ifname}{table} is missing in {ep.netns}"
                    )
            rule = source_rule(ep)
            if rule is not None and rule not in await pod.rules():
                problems.append(
                    f"rule from {rule.src} lookup {rule.table} is missing in {ep.netns}"
                )
    except NetnsNotFound:
        problems.append(f"network namespace {ep.netns} is missing")
    return problems
