"""The node's own routes in the kernel: listed, added (replaced) and deleted.

The routes carry their own protocol number (RTPROT_PYLIUM) in the main table, so listing finds
exactly the routes this component made and pruning never touches the connected route, the
default route or the agent's per-pod routes.

Why its own pyroute2 socket rather than `datapath/netlink.py`: that adapter's `Route` has no
protocol and it has no route delete or replace yet; DPINT owns it while the datapath work runs.
Once it grows those, this module becomes a thin use of it.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, Protocol

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pylium.routing.desired import NodeRoute

RTPROT_PYLIUM = 195
"""Protocol number marking our routes (unassigned in /etc/iproute2/rt_protos)."""
_RT_TABLE_MAIN = 254


class RouteKernel(Protocol):
    """The node's pylium routes out of one device."""

    async def routes(self) -> set[NodeRoute]:
        """The routes this component owns, as the kernel holds them."""
        ...

    async def replace(self, route: NodeRoute) -> None:
        """Install the route, replacing one to the same destination."""
        ...

    async def delete(self, route: NodeRoute) -> None:
        """Remove the route; already gone is success."""
        ...


class PyrouteRouteKernel:
    """`RouteKernel` over one RTNL socket of the namespace the process runs in.

    Open with `start()`, close with `stop()`."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._ipr: Any = None

    async def start(self) -> None:
        """Open the RTNL socket."""
        self._ipr = AsyncIPRoute()
        await self._ipr.setup_endpoint()

    async def stop(self) -> None:
        """Close the socket."""
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def _oif(self) -> int:
        found = await self._ipr.link_lookup(ifname=self.device)
        if not found:
            raise LookupError(f"no device {self.device!r} in this namespace")
        (index,) = found
        return int(index)

    async def routes(self) -> set[NodeRoute]:
        found = set()
        async for msg in await self._ipr.route(
            "dump", family=socket.AF_INET, table=_RT_TABLE_MAIN, proto=RTPROT_PYLIUM
        ):
            if msg["proto"] == RTPROT_PYLIUM and msg.get("gateway"):
                found.add(NodeRoute(f"{msg.get('dst')}/{msg['dst_len']}", msg.get("gateway")))
        return found

    async def replace(self, route: NodeRoute) -> None:
        await self._ipr.route(
            "replace",
            dst=route.dst,
            gateway=route.gateway,
            oif=await self._oif(),
            proto=RTPROT_PYLIUM,
            table=_RT_TABLE_MAIN,
        )

    async def delete(self, route: NodeRoute) -> None:
        try:
            await self._ipr.route(
                "del",
                dst=route.dst,
                gateway=route.gateway,
                proto=RTPROT_PYLIUM,
                table=_RT_TABLE_MAIN,
            )
        except NetlinkError as err:
            if err.code != errno.ESRCH:
                raise
