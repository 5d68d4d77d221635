"""The typed netlink adapter: the only module of pylium that talks RTNL (through pyroute2).

Control-plane code depends on the `Netlink` and `Netns` protocols below and never imports
pyroute2, so unit tests run it against an in-memory fake. `PyrouteNetlink` is the real thing:
one RTNL socket for the agent's own (node) namespace, opened at `start()` and reused, and a
short-lived socket per pod namespace (see `_rtnl_socket_in`).

The kernel runs an RTNL request inside the sender's sendmsg(), so a slow one blocks the calling
thread: deleting a node-side veth (RCU grace periods, ~15 ms bare, ~50 ms with tcx links) runs
on a socket of its own in a worker thread instead of stalling the event loop.

Adds and deletes are idempotent by errno (EEXIST on add, ENOENT/ENODEV/ESRCH on delete), except
`add_veth`, whose EEXIST means "someone else's interface" and raises `LinkExists`.

Exceptions::

    NetlinkError                    (pyroute2's NetlinkError is re-raised as is otherwise)
    ├── LinkExists                  an interface with that name is already there
    ├── LinkNotFound                no interface with that name
    └── NetnsNotFound               the namespace path does not exist
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import socket
import struct
import threading
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError as RtnlError

log = logging.getLogger(__name__)

Scope = Literal["universe", "link"]

_RT_SCOPE: dict[Scope, int] = {"universe": 0, "link": 253}
_RT_TABLE_MAIN = 254
MAIN_TABLE = _RT_TABLE_MAIN
"""The routing table routes go to unless they name another."""
_IFF_UP = 1
_RTM_DELLINK = 17
_NLMSG_ERROR = 2
_NLM_F_REQUEST_ACK = 0x1 | 0x4

HOST_DEV = "pylium_host"
"""Holds the node's router IP, as Cilium's cilium_host."""
NET_DEV = "pylium_net"
"""The other end of HOST_DEV's veth pair, as cilium_net."""


class NetlinkError(Exception):
    """Base of the adapter's own errors."""


class LinkExists(NetlinkError):
    """An interface with the requested name exists already."""


class LinkNotFound(NetlinkError):
    """No interface with that name."""


class NetnsNotFound(NetlinkError):
    """The network namespace path does not exist (the pod is gone)."""


@dataclass(frozen=True)
class Link:
    """An interface as the kernel reports it."""

    name: str
    index: int
    mac: str
    mtu: int
    up: bool


@dataclass(frozen=True)
class Route:
    """An IPv4 route (in the main table unless `table` says otherwise)."""

    dst: str
    """Prefix in CIDR form; "0.0.0.0/0" for the default route."""
    dev: str
    gateway: str | None = None
    scope: Scope = "universe"
    table: int = MAIN_TABLE


@dataclass(frozen=True)
class Rule:
    """An IPv4 policy routing rule: packets from `src` look up `table`."""

    src: str
    """Source prefix in CIDR form ("10.244.1.7/32")."""
    table: int
    priority: int


class Netns(Protocol):
    """Operations inside one network namespace."""

    async def link(self, name: str) -> Link | None:
        """The interface called `name`, or None."""
        ...

    async def links(self) -> list[Link]:
        """Every interface of the namespace."""
        ...

    async def add_veth(
        self,
        name: str,
        peer: str,
        mtu: int,
        *,
        peer_netns: str | None = None,
        peer_mac: str | None = None,
    ) -> Link:
        """Create a veth pair; returns the `name` end.

        With `peer_netns` the peer is born in the namespace at that path, already named: on
        this kernel that costs ~1 ms where creating it here and moving it costs ~18 ms.
        Raises LinkExists (either name taken) or NetnsNotFound."""
        ...

    async def delete_link(self, name: str) -> bool:
        """Delete an interface (a veth takes its peer with it); False if it was absent."""
        ...

    async def set_link(
        self,
        name: str,
        *,
        new_name: str | None = None,
        mtu: int | None = None,
        mac: str | None = None,
        up: bool | None = None,
    ) -> Link:
        """Change an interface's name, MTU, MAC or state; returns it as it is now.

        Raises LinkNotFound, or LinkExists when `new_name` is taken."""
        ...

    async def add_address(self, dev: str, cidr: str) -> None:
        """Add an IPv4 address ("10.0.0.5/32"); present already is success."""
        ...

    async def addresses(self, dev: str) -> list[str]:
        """IPv4 addresses of `dev` in CIDR form."""
        ...

    async def add_route(self, route: Route) -> None:
        """Add a route to its table; present already is success."""
        ...

    async def delete_route(self, route: Route) -> bool:
        """Delete a route; False if it was not there (or its device is gone)."""
        ...

    async def routes(self, dev: str, table: int = MAIN_TABLE) -> list[Route]:
        """IPv4 routes of `table` whose output device is `dev`."""
        ...

    async def add_rule(self, rule: Rule) -> None:
        """Add a policy routing rule; present already is success."""
        ...

    async def delete_rule(self, rule: Rule) -> bool:
        """Delete a policy routing rule; False if it was not there."""
        ...

    async def rules(self) -> list[Rule]:
        """IPv4 policy routing rules that select by source prefix."""
        ...


class Netlink(Protocol):
    """Netlink for the agent: its own (node) namespace and, briefly, pod namespaces."""

    @property
    def node(self) -> Netns:
        """The namespace the agent runs in."""
        ...

    def netns(self, path: str) -> AbstractAsyncContextManager[Netns]:
        """Enter the namespace bind-mounted at `path`; raises NetnsNotFound if absent."""
        ...

    async def setup_node(self, router_ip: str) -> None:
        """Prepare the node namespace for pods: pylium_host/pylium_net up, the router IP /32
        on pylium_host, IPv4 forwarding on and reverse-path filtering off."""
        ...


_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


async def _rtnl_socket_in(path: str) -> socket.socket:
    """An RTNL socket bound to the namespace at `path`; raises NetnsNotFound if absent.

    A socket belongs to the namespace it was created in. We create it in a fresh thread that
    enters the namespace (setns acts on the calling thread only) and then returns. This is
    pyroute2's `netns=` without its fork: forking the agent is slower (~5 ms against ~0.6 ms) and
    the child inherits asyncio's signal wake-up fd, so the SIGTERM pyroute2 sends it to clean up
    reaches the agent's loop as if the agent itself were told to stop.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[socket.socket] = loop.create_future()

    def settle(result: socket.socket | BaseException) -> None:
        if done.cancelled():
            if isinstance(result, socket.socket):
                result.close()
        elif isinstance(result, BaseException):
            done.set_exception(result)
        else:
            done.set_result(result)

    def create() -> None:
        result: socket.socket | BaseException
        try:
            result = _socket_in_thread(path)
        except BaseException as err:
            result = err
        loop.call_soon_threadsafe(settle, result)

    # A throwaway thread, never a pool worker: if returning home failed, the thread dies with
    # its wrong namespace instead of serving the next job there.
    threading.Thread(target=create, name=f"netns:{path}", daemon=True).start()
    return await done


def _socket_in_thread(path: str) -> socket.socket:
    try:
        target = os.open(path, os.O_RDONLY)  # no O_CREAT: a stale path is an error
    except FileNotFoundError as err:
        raise NetnsNotFound(f"network namespace {path} does not exist") from err
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(target, path)
        try:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_ROUTE)
        finally:
            _setns(home, "the agent's namespace")
    finally:
        os.close(target)
        os.close(home)


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns into {what}: {os.strerror(code)}")


_NETLINK_ROUTE = 0


def _missing(err: Exception, *codes: int) -> bool:
    return getattr(err, "code", None) in codes


def _delete_link_blocking(index: int) -> bool:
    """RTM_DELLINK of `index` in the calling thread's namespace; False if it was gone."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE) as sock:
        header = struct.pack("=LHHLL", 32, _RTM_DELLINK, _NLM_F_REQUEST_ACK, 1, 0)
        sock.send(header + struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0))
        answer = sock.recv(65536)
    (kind,) = struct.unpack_from("=H", answer, 4)
    if kind != _NLMSG_ERROR:
        raise NetlinkError(f"RTM_DELLINK answered with message type {kind}")
    (error,) = struct.unpack_from("=i", answer, 16)
    if error == 0:
        return True
    if -error in (errno.ENODEV, errno.ENOENT):
        return False
    raise OSError(-error, f"deleting interface {index}: {os.strerror(-error)}")


class PyrouteNetns:
    """`Netns` over one pyroute2 AsyncIPRoute socket. `home`: the namespace is the agent's
    own, where its worker threads live, so slow requests may run in one."""

    def __init__(self, ipr: Any, home: bool = False) -> None:
        self._ipr = ipr
        self._home = home

    async def _index(self, name: str) -> int | None:
        found = await self._ipr.link_lookup(ifname=name)
        if not found:
            return None
        (index,) = found
        return int(index)

    async def _require(self, name: str) -> int:
        index = await self._index(name)
        if index is None:
            raise LinkNotFound(f"no interface {name!r}")
        return index

    @staticmethod
    def _to_link(msg: Any) -> Link:
        return Link(
            name=str(msg.get("ifname")),
            index=int(msg["index"]),
            mac=str(msg.get("address") or ""),
            mtu=int(msg.get("mtu") or 0),
            up=bool(msg["flags"] & _IFF_UP),
        )

    async def link(self, name: str) -> Link | None:
        index = await self._index(name)
        if index is None:
            return None
        (msg,) = await self._ipr.link("get", index=index)
        return self._to_link(msg)

    async def links(self) -> list[Link]:
        return [self._to_link(msg) async for msg in await self._ipr.link("dump")]

    async def add_veth(
        self,
        name: str,
        peer: str,
        mtu: int,
        *,
        peer_netns: str | None = None,
        peer_mac: str | None = None,
    ) -> Link:
        peer_spec: dict[str, Any] = {"ifname": peer, "mtu": mtu}
        if peer_mac is not None:
            peer_spec["address"] = peer_mac
        netns_fd: int | None = None
        if peer_netns is not None:
            try:
                netns_fd = os.open(peer_netns, os.O_RDONLY)
            except FileNotFoundError as err:
                raise NetnsNotFound(f"network namespace {peer_netns} does not exist") from err
            peer_spec["net_ns_fd"] = netns_fd
        try:
            await self._ipr.link("add", ifname=name, kind="veth", mtu=mtu, peer=peer_spec)
        except RtnlError as err:
            if err.code == errno.EEXIST:
                raise LinkExists(f"interface {name!r} or {peer!r} exists already") from err
            raise
        finally:
            if netns_fd is not None:
                os.close(netns_fd)
        link = await self.link(name)
        if link is None:
            raise LinkNotFound(f"veth {name!r} vanished right after creation")
        return link

    async def delete_link(self, name: str) -> bool:
        index = await self._index(name)
        if index is None:
            return False
        if self._home:
            return await asyncio.to_thread(_delete_link_blocking, index)
        try:
            await self._ipr.link("del", index=index)
        except RtnlError as err:
            if _missing(err, errno.ENODEV, errno.ENOENT):
                return False
            raise
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
        index = await self._require(name)
        changes: dict[str, Any] = {}
        if new_name is not None and new_name != name:
            changes["ifname"] = new_name
        if mtu is not None:
            changes["mtu"] = mtu
        if mac is not None:
            changes["address"] = mac
        if changes:
            try:
                await self._ipr.link("set", index=index, **changes)
            except RtnlError as err:
                if err.code == errno.EEXIST:
                    raise LinkExists(f"interface {new_name!r} exists already") from err
                raise
        if up is not None:
            await self._ipr.link("set", index=index, state="up" if up else "down")
        (msg,) = await self._ipr.link("get", index=index)
        return self._to_link(msg)

    async def add_address(self, dev: str, cidr: str) -> None:
        index = await self._require(dev)
        address, _, prefixlen = cidr.partition("/")
        try:
            await self._ipr.addr("add", index=index, address=address, prefixlen=int(prefixlen))
        except RtnlError as err:
            if err.code != errno.EEXIST:
                raise

    async def addresses(self, dev: str) -> list[str]:
        index = await self._require(dev)
        return [
            f"{msg.get('address')}/{msg['prefixlen']}"
            async for msg in await self._ipr.addr("dump", index=index, family=socket.AF_INET)
        ]

    async def add_route(self, route: Route) -> None:
        index = await self._require(route.dev)
        try:
            await self._ipr.route("add", **_route_spec(route, index))
        except RtnlError as err:
            if err.code != errno.EEXIST:
                raise

    async def delete_route(self, route: Route) -> bool:
        index = await self._index(route.dev)
        if index is None:
            return False
        try:
            await self._ipr.route("del", **_route_spec(route, index))
        except RtnlError as err:
            if _missing(err, errno.ESRCH, errno.ENOENT, errno.ENODEV):
                return False
            raise
        return True

    async def routes(self, dev: str, table: int = MAIN_TABLE) -> list[Route]:
        index = await self._require(dev)
        scopes: dict[int, Scope] = {0: "universe", 253: "link"}
        found: list[Route] = []
        async for msg in await self._ipr.route(
            "dump", oif=index, family=socket.AF_INET, table=table
        ):
            scope = scopes.get(int(msg["scope"]))
            if scope is None or msg.get("table") != table:
                continue
            dst = msg.get("dst") or "0.0.0.0"
            found.append(
                Route(f"{dst}/{msg['dst_len']}", dev, msg.get("gateway"), scope, table),
            )
        return found

    def _rule_spec(self, rule: Rule) -> dict[str, Any]:
        src, _, length = rule.src.partition("/")
        return {
            "family": socket.AF_INET,
            "src": src,
            "src_len": int(length or 32),
            "table": rule.table,
            "priority": rule.priority,
        }

    async def add_rule(self, rule: Rule) -> None:
        try:
            await self._ipr.rule("add", **self._rule_spec(rule))
        except RtnlError as err:
            if err.code != errno.EEXIST:
                raise

    async def delete_rule(self, rule: Rule) -> bool:
        try:
            await self._ipr.rule("del", **self._rule_spec(rule))
        except RtnlError as err:
            if _missing(err, errno.ENOENT, errno.ESRCH):
                return False
            raise
        return True

    async def rules(self) -> list[Rule]:
        return [
            Rule(f"{msg.get('src')}/{msg['src_len']}", int(msg.get("table")), msg.get("priority"))
            async for msg in await self._ipr.rule("dump", family=socket.AF_INET)
            if msg.get("src") is not None
        ]


class PyrouteNetlink:
    """The real `Netlink`: pyroute2 AsyncIPRoute sockets. Open with start(), close with stop()."""

    def __init__(self, sysctl_root: Path = Path("/proc/sys")) -> None:
        self._sysctl_root = sysctl_root
        self._ipr: Any = None
        self._node: PyrouteNetns | None = None

    async def start(self) -> None:
        """Open the node namespace's RTNL socket."""
        self._ipr = AsyncIPRoute()
        await self._ipr.setup_endpoint()
        self._node = PyrouteNetns(self._ipr, home=True)

    async def stop(self) -> None:
        """Close the node socket."""
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
            self._node = None

    @property
    def node(self) -> Netns:
        if self._node is None:
            raise RuntimeError("PyrouteNetlink used before start()")
        return self._node

    @asynccontextmanager
    async def _enter(self, path: str) -> AsyncIterator[Netns]:
        sock = await _rtnl_socket_in(path)
        async with AsyncIPRoute(fileno=sock.detach()) as ipr:
            yield PyrouteNetns(ipr)

    def netns(self, path: str) -> AbstractAsyncContextManager[Netns]:
        return self._enter(path)

    async def setup_node(self, router_ip: str) -> None:
        node = self.node
        with suppress(LinkExists):  # a restarted agent finds its pair in place
            await node.add_veth(HOST_DEV, NET_DEV, 1500)
        await node.set_link(NET_DEV, up=True)
        await node.set_link(HOST_DEV, up=True)
        await node.add_address(HOST_DEV, f"{router_ip}/32")
        # /proc/sys/net is per network namespace of the writer: this changes the node netns
        # the agent runs in, never the machine's root namespace (unless the agent runs there).
        self._sysctl("net/ipv4/ip_forward", "1")
        for dev in ("all", "default", HOST_DEV, NET_DEV):
            self._sysctl(f"net/ipv4/conf/{dev}/rp_filter", "0")

    def _sysctl(self, key: str, value: str) -> None:
        (self._sysctl_root / key).write_text(value)


def _route_spec(route: Route, index: int) -> dict[str, Any]:
    """pyroute2's arguments for one route on the device with this index."""
    spec: dict[str, Any] = {
        "dst": route.dst,
        "oif": index,
        "scope": _RT_SCOPE[route.scope],
        "table": route.table,
    }
    if route.gateway is not None:
        spec["gateway"] = route.gateway
    return spec
