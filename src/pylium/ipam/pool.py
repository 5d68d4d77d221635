"""CRD-mode IPAM: hand out addresses from an explicit list (`CiliumNode.spec.ipam.pool`).

An outside controller lists the node's addresses; the list may grow or shrink while the agent
runs (`set_pool`). The lowest address at first start becomes the router IP and stays it across
restarts and pool changes (it is on `pylium_host`; as in Cilium, the router takes an address of
the pool). An address dropped from the list stays with its holder until released, then is never
handed out again; addresses persisted outside the list survive a restart the same way.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable, Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from pylium.ipam.allocator import NodeAllocator


class PoolListAllocator(NodeAllocator):
    """Allocates addresses from an explicit IPv4 list, persisted in `state_file`.

    Args:
        pool: the node's addresses (at least two: the router and one pod).
        state_file: where allocations, the router IP and the cursor are kept.
        clock: wall-clock seconds.

    Construction only validates; call `load()` before use.
    """

    def __init__(
        self, pool: Iterable[str], state_file: Path, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(state_file, clock)
        self.cidr = None
        self._pool: list[IPv4Address] = []
        self._members: set[IPv4Address] = set()
        self._replace(pool)
        if len(self._pool) < 2:
            raise ValueError("the address pool needs at least two addresses (router and a pod)")
        self.router_ip = self._pool[0]

    @property
    def pool(self) -> list[IPv4Address]:
        """The current address list, sorted."""
        return list(self._pool)

    @property
    def capacity(self) -> int:
        """Addresses of the list that can be handed out (all but the router)."""
        return len(self._members - {self.router_ip})

    def describe(self) -> str:
        """`pool of N addresses`."""
        return f"pool of {len(self._pool)} addresses"

    def set_pool(self, pool: Iterable[str]) -> None:
        """Replace the address list (the outside controller changed it); holders keep their
        addresses even if they left the list."""
        before = self._members
        self._replace(pool)
        if self._members != before:
            self.generation += 1  # capacity changed: publish usage again

    def _replace(self, pool: Iterable[str]) -> None:
        members = {IPv4Address(ip) for ip in pool}
        self._members = members
        self._pool = sorted(members)

    def _allocatable(self, ip: IPv4Address) -> bool:
        return ip in self._members and ip != self.router_ip

    def _contains(self, ip: IPv4Address) -> bool:
        return ip in self._members or ip == self.router_ip

    def _kept_on_load(self, ip: IPv4Address) -> bool:
        return ip != self.router_ip

    def _candidates(self, after: int) -> Iterator[IPv4Address]:
        start = bisect.bisect_right(self._pool, IPv4Address(after))
        count = len(self._pool)
        for step in range(count):
            ip = self._pool[(start + step) % count]
            if ip != self.router_ip:
                yield ip

    def _restore(self, data: dict[str, Any]) -> bool:
        router = data.get("router")
        if router is None:
            return True  # a state file of another mode: record our router
        self.router_ip = IPv4Address(router)
        return False

    def _state(self) -> dict[str, Any]:
        return {"pool": [str(ip) for ip in self._pool], "router": str(self.router_ip)}
