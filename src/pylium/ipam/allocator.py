"""Host-scope IPAM: hand out this node's pod addresses.

`NodeAllocator` keeps the books every IPAM mode shares; `ClusterPoolAllocator` hands out a pod
CIDR (cluster-pool and kubernetes modes: the operator, `pylium lab up` or Node.spec gives each
node one; the agent owns every address in it), `PoolListAllocator` (`ipam/pool.py`) an explicit
address list (crd mode). The router IP, held by `pylium_host`, is never handed out.

Every change is written to the state file (atomically) before the caller learns the result, so
an agent killed at any point restarts with every allocation it ever returned and hands out
nothing twice. Allocation is next-fit from a persisted cursor, so a just-released address is
the last to be reused (a late packet for a deleted pod rarely reaches a new one).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from pylium import statefile

log = logging.getLogger(__name__)


class IpamError(Exception):
    """Base of IPAM errors."""


class PoolExhausted(IpamError):
    """No free address is left in the pod CIDR."""


class NotInPool(IpamError):
    """The address is not one this node hands out."""


@dataclass(frozen=True)
class Allocation:
    """One handed-out address."""

    ip: IPv4Address
    owner: str
    """Who holds it: `<containerID>/<ifname>` for endpoints, free-form for POST /v1/ipam."""
    created: float
    """Wall-clock time of allocation (seconds); young owner-less allocations survive GC."""


class NodeAllocator:
    """Host-scope bookkeeping shared by every IPAM mode: who holds which address, next-fit
    allocation, release, GC and the state file. Subclasses say which addresses may be handed
    out (`_allocatable`, `_candidates`, `capacity`) and what else they persist.

    Construction only validates; call `load()` before use.
    """

    cidr: IPv4Network | None
    """The node's pod CIDR, or None when addresses come from an explicit list (crd mode)."""
    router_ip: IPv4Address
    """The node's gateway for its pods (held by `pylium_host`, never handed out)."""

    def __init__(self, state_file: Path, clock: Callable[[], float]) -> None:
        self._state_file = state_file
        self._clock = clock
        self._by_ip: dict[IPv4Address, Allocation] = {}
        self._cursor = 0
        """The address last handed out (as an int): next-fit continues after it."""
        self.generation = 0
        """Bumped on every change; readers publish usage when it moves."""

    # -- what subclasses define ---------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Addresses that can be handed out."""
        raise NotImplementedError

    def describe(self) -> str:
        """The address source, for messages: `10.244.1.0/24`, `pool of 16 addresses`."""
        raise NotImplementedError

    def _allocatable(self, ip: IPv4Address) -> bool:
        """Whether `ip` may be handed out now."""
        raise NotImplementedError

    def _candidates(self, after: int) -> Iterator[IPv4Address]:
        """Every allocatable address once, starting after `after` and wrapping around."""
        raise NotImplementedError

    def _contains(self, ip: IPv4Address) -> bool:
        """Whether `ip` belongs to this node's addresses (release of a free one is no error)."""
        raise NotImplementedError

    def _kept_on_load(self, ip: IPv4Address) -> bool:
        """Whether a persisted allocation of `ip` is kept by load()."""
        return self._allocatable(ip)

    def _restore(self, data: dict[str, Any]) -> bool:
        """Read subclass fields from the state; True if the file must be rewritten."""
        return False

    def _state(self) -> dict[str, Any]:
        """Subclass fields to persist."""
        return {}

    # -- bookkeeping --------------------------------------------------------------------------

    def load(self) -> None:
        """Read allocations back from the state file (none if it does not exist).

        Allocations the node may no longer hold (its CIDR changed) are dropped with a warning
        and the file is rewritten.
        """
        try:
            data = statefile.read_json(self._state_file)
        except FileNotFoundError:
            self._save()
            return
        dirty = self._restore(data)
        for ip_text, rec in data.get("allocations", {}).items():
            ip = IPv4Address(ip_text)
            if not self._kept_on_load(ip):
                log.warning("dropping allocation %s (%s): outside %s", ip, rec, self.describe())
                dirty = True
                continue
            self._by_ip[ip] = Allocation(ip, str(rec["owner"]), float(rec["created"]))
        self._cursor = int(data.get("cursor", self._cursor))
        if dirty:
            self._save()

    def allocate(self, owner: str) -> Allocation:
        """Hand out the next free address to `owner`.

        Raises:
            PoolExhausted: every address is in use.
        """
        for candidate in self._candidates(self._cursor):
            if candidate not in self._by_ip:
                alloc = Allocation(candidate, owner, self._clock())
                self._by_ip[candidate] = alloc
                self._cursor = int(candidate)
                self._save()
                return alloc
        raise PoolExhausted(f"no free address in {self.describe()} ({self.used_count} in use)")

    def release(self, ip: IPv4Address | str) -> Allocation | None:
        """Free one address; returns what was released (None if it was free already)."""
        addr = IPv4Address(ip)
        alloc = self._by_ip.pop(addr, None)
        if alloc is None and not self._contains(addr):
            raise NotInPool(f"{addr} is not in {self.describe()}")
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
        return self.capacity - sum(1 for ip in self._by_ip if self._allocatable(ip))

    def _save(self) -> None:
        self.generation += 1
        statefile.write_json(
            self._state_file,
            {
                **self._state(),
                "cursor": self._cursor,
                "allocations": {
                    str(a.ip): {"owner": a.owner, "created": a.created}
                    for a in self._by_ip.values()
                },
            },
        )


class ClusterPoolAllocator(NodeAllocator):
    """Allocates addresses from one IPv4 pod CIDR (cluster-pool and kubernetes modes),
    persisted in `state_file`. The network and broadcast addresses and the router IP (the
    first usable address) are never handed out.

    Construction only validates; call `load()` before use.
    """

    def __init__(self, cidr: str, state_file: Path, clock: Callable[[], float] = time.time) -> None:
        super().__init__(state_file, clock)
        net = IPv4Network(cidr, strict=True)
        if net.num_addresses < 4:
            raise ValueError(f"pod CIDR {cidr} is too small (needs at least a /30)")
        self.cidr: IPv4Network = net
        self.router_ip = net.network_address + 1
        self._cursor = int(self.router_ip)

    @property
    def capacity(self) -> int:
        """Addresses that can be handed out (all but network, broadcast and router)."""
        return self.cidr.num_addresses - 3

    def describe(self) -> str:
        """The pod CIDR."""
        return str(self.cidr)

    def _allocatable(self, ip: IPv4Address) -> bool:
        return (
            ip in self.cidr
            and ip != self.cidr.network_address
            and ip != self.cidr.broadcast_address
            and ip != self.router_ip
        )

    def _contains(self, ip: IPv4Address) -> bool:
        return ip in self.cidr

    def _candidates(self, after: int) -> Iterator[IPv4Address]:
        first = int(self.router_ip) + 1
        last = int(self.cidr.broadcast_address) - 1
        span = last - first + 1
        # a cursor outside the CIDR (a changed CIDR) starts over at the first address
        start = after + 1 if first - 1 <= after <= last else first
        for step in range(span):
            yield IPv4Address(first + (start - first + step) % span)

    def _state(self) -> dict[str, Any]:
        return {"cidr": str(self.cidr)}


def parse_ipv4(text: str) -> IPv4Address:
    """Parse an IPv4 address, raising ValueError with the text on failure."""
    addr = ipaddress.ip_address(text)
    if not isinstance(addr, IPv4Address):
        raise ValueError(f"{text!r} is not an IPv4 address")
    return addr
