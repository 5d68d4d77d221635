"""Cluster-pool IPAM, host scope: hand out addresses from this node's pod CIDR.

The operator (or `pylium lab up`) gives each node a pod CIDR in its CiliumNode; the agent owns
every address in it. The network and broadcast addresses and the router IP (the first usable
address, held by `pylium_host`) are never handed out.

Every change is written to the state file (atomically) before the caller learns the result, so
an agent killed at any point restarts with every allocation it ever returned and hands out
nothing twice. Allocation is next-fit from a persisted cursor, so a just-released address is
the last to be reused (a late packet for a deleted pod rarely reaches a new one).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Container
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from pylium import statefile

log = logging.getLogger(__name__)


class IpamError(Exception):
    """Base of IPAM errors."""


class PoolExhausted(IpamError):
    """No free address is left in the pod CIDR."""


class NotInPool(IpamError):
    """The address is not part of this node's pod CIDR."""


@dataclass(frozen=True)
class Allocation:
    """One handed-out address."""

    ip: IPv4Address
    owner: str
    """Who holds it: `<containerID>/<ifname>` for endpoints, free-form for POST /v1/ipam."""
    created: float
    """Wall-clock time of allocation (seconds); young owner-less allocations survive GC."""


class ClusterPoolAllocator:
    """Allocates addresses from one IPv4 pod CIDR, persisted in `state_file`.

    Construction only validates; call `load()` before use.
    """

    def __init__(self, cidr: str, state_file: Path, clock: Callable[[], float] = time.time) -> None:
        self.cidr: IPv4Network = IPv4Network(cidr, strict=True)
        if self.cidr.num_addresses < 4:
            raise ValueError(f"pod CIDR {cidr} is too small (needs at least a /30)")
        self.router_ip: IPv4Address = self.cidr.network_address + 1
        """The node's gateway for its pods."""
        self._state_file = state_file
        self._clock = clock
        self._by_ip: dict[IPv4Address, Allocation] = {}
        self._cursor = int(self.router_ip)
        self.generation = 0
        """Bumped on every change; readers publish usage when it moves."""

    @property
    def capacity(self) -> int:
        """Addresses that can be handed out (all but network, broadcast and router)."""
        return self.cidr.num_addresses - 3

    def load(self) -> None:
        """Read allocations back from the state file (none if it does not exist).

        Allocations outside the current CIDR (the node's CIDR changed) are dropped with a
        warning and the file is rewritten.
        """
        try:
            data = statefile.read_json(self._state_file)
        except FileNotFoundError:
            self._save()
            return
        dropped = False
        for ip_text, rec in data.get("allocations", {}).items():
            ip = IPv4Address(ip_text)
            if not self._allocatable(ip):
                log.warning("dropping allocation %s (%s): outside pod CIDR %s", ip, rec, self.cidr)
                dropped = True
                continue
            self._by_ip[ip] = Allocation(ip, str(rec["owner"]), float(rec["created"]))
        cursor = int(data.get("cursor", int(self.router_ip)))
        if int(self.router_ip) <= cursor < int(self.cidr.broadcast_address):
            self._cursor = cursor
        if dropped:
            self._save()

    def allocate(self, owner: str) -> Allocation:
        """Hand out the next free address to `owner`.

        Raises:
            PoolExhausted: every address is in use.
        """
        first = int(self.router_ip) + 1
        last = int(self.cidr.broadcast_address) - 1
        span = last - first + 1
        start = self._cursor + 1
        for step in range(span):
            candidate = IPv4Address(first + (start - first + step) % span)
            if candidate not in self._by_ip:
                alloc = Allocation(candidate, owner, self._clock())
                self._by_ip[candidate] = alloc
                self._cursor = int(candidate)
                self._save()
                return alloc
        raise PoolExhausted(f"no free address in {self.cidr} ({self.capacity} in use)")

    def release(self, ip: IPv4Address | str) -> Allocation | None:
        """Free one address; returns what was released (None if it was free already)."""
        addr = IPv4Address(ip)
        if addr not in self.cidr:
            raise NotInPool(f"{addr} is not in pod CIDR {self.cidr}")
        alloc = self._by_ip.pop(addr, None)
        if alloc is not None:
            self._save()
        return alloc

    def release_owner(self, owner: str) -> list[Allocation]:
        """Free every address `owner` holds; returns them."""
        gone = [a for a in self._by_ip.values() if a.owner == owner]
        for alloc in gone:
            del self._by_ip[alloc.ip]
        if gone:
            self._save()
        return gone

    def owned_by(self, owner: str) -> list[Allocation]:
        """The addresses `owner` holds."""
        return [a for a in self._by_ip.values() if a.owner == owner]

    def get(self, ip: IPv4Address | str) -> Allocation | None:
        """The allocation of one address, if any."""
        return self._by_ip.get(IPv4Address(ip))

    def gc(self, live_owners: Container[str], grace: float) -> list[Allocation]:
        """Release allocations whose owner is not live and that are older than `grace` seconds.

        `live_owners` holds owners with an endpoint and owners with an ADD in flight; the grace
        period protects addresses taken through POST /v1/ipam for an endpoint not yet created.
        """
        cutoff = self._clock() - grace
        stale = [
            a for a in self._by_ip.values() if a.owner not in live_owners and a.created <= cutoff
        ]
        for alloc in stale:
            log.info("ipam gc: releasing %s held by %s (no endpoint)", alloc.ip, alloc.owner)
            del self._by_ip[alloc.ip]
        if stale:
            self._save()
        return stale

    def used(self) -> dict[str, str]:
        """Address -> owner, sorted by address."""
        return {str(ip): self._by_ip[ip].owner for ip in sorted(self._by_ip)}

    @property
    def used_count(self) -> int:
        """Addresses handed out."""
        return len(self._by_ip)

    @property
    def available(self) -> int:
        """Addresses still free."""
        return self.capacity - len(self._by_ip)

    def _allocatable(self, ip: IPv4Address) -> bool:
        return (
            ip in self.cidr
            and ip != self.cidr.network_address
            and ip != self.cidr.broadcast_address
            and ip != self.router_ip
        )

    def _save(self) -> None:
        self.generation += 1
        statefile.write_json(
            self._state_file,
            {
                "cidr": str(self.cidr),
                "cursor": self._cursor,
                "allocations": {
                    str(a.ip): {"owner": a.owner, "created": a.created}
                    for a in self._by_ip.values()
                },
            },
        )


def parse_ipv4(text: str) -> IPv4Address:
    """Parse an IPv4 address, raising ValueError with the text on failure."""
    addr = ipaddress.ip_address(text)
    if not isinstance(addr, IPv4Address):
        raise ValueError(f"{text!r} is not an IPv4 address")
    return addr
