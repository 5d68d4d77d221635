"""The ipcache desired state: IP prefix -> identity, hosting node and tunnel endpoint.

Several writers may claim one prefix (a node IP that is also a host-network pod's IP, a pod IP
reused before the old pod's delete arrives). Each claim is kept under its owner; the entry the
datapath sees is the one of the strongest source, the latest write among equals (Cilium keeps
per-source claims the same way). Every change of the visible entries bumps `revision`, and
`wait_changed` lets a reconciler sleep until the next one.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address, IPv4Network


class Source(IntEnum):
    """Who claims a prefix; a higher value wins."""

    GENERATED = 0
    """Defaults pylium adds itself (0.0.0.0/0 -> world)."""
    POD = 1
    """A pod's IP (Pod status, or an endpoint the local agent registered)."""
    NODE = 2
    """A node's own addresses (Node, CiliumNode)."""
    LOCAL = 3
    """This node's own addresses."""

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Entry:
    """One ipcache row."""

    prefix: IPv4Network
    identity: int
    tunnel_endpoint: IPv4Address | None
    """The hosting node's underlay IP when traffic must be tunnelled to it; None for local
    addresses and for those the underlay reaches directly (node IPs, the world)."""
    node: str
    """The node hosting the address ("" for the world)."""
    source: Source
    owner: str
    """The claim: `pod/<ns>/<name>`, `node/<name>`, `world`."""
    encrypt_key: int = 0


class IPCacheTable:
    """Prefix -> Entry, with per-owner claims and a change revision."""

    def __init__(self) -> None:
        self.revision = 0
        """Bumped whenever a visible entry changes."""
        self._claims: dict[IPv4Network, dict[str, tuple[int, Entry]]] = {}
        self._owned: dict[str, set[IPv4Network]] = {}
        self._visible: dict[IPv4Network, Entry] = {}
        self._seq = itertools.count()
        self._changed = asyncio.Event()

    def set_owner(self, owner: str, entries: Iterable[Entry]) -> None:
        """Make `entries` the whole claim of `owner` (an empty list withdraws it)."""
        wanted = {e.prefix: e for e in entries}
        if any(e.owner != owner for e in wanted.values()):
            raise ValueError(f"entries of {owner} name another owner")
        touched = set(wanted) | self._owned.get(owner, set())
        for prefix in touched:
            claims = self._claims.setdefault(prefix, {})
            entry = wanted.get(prefix)
            if entry is None:
                claims.pop(owner, None)
            elif claims.get(owner, (0, None))[1] != entry:
                claims[owner] = (next(self._seq), entry)
            if not claims:
                del self._claims[prefix]
        if wanted:
            self._owned[owner] = set(wanted)
        else:
            self._owned.pop(owner, None)
        changed = False
        for prefix in touched:
            best = self._strongest(prefix)
            if self._visible.get(prefix) != best:
                changed = True
                if best is None:
                    del self._visible[prefix]
                else:
                    self._visible[prefix] = best
        if changed:
            self.revision += 1
            self._changed.set()
            self._changed = asyncio.Event()

    def _strongest(self, prefix: IPv4Network) -> Entry | None:
        claims = self._claims.get(prefix)
        if not claims:
            return None
        return max(claims.values(), key=lambda c: (c[1].source, c[0]))[1]

    def owned(self, owner: str) -> list[Entry]:
        """The entries an owner claims (visible or not), by prefix."""
        return sorted(
            (self._claims[p][owner][1] for p in self._owned.get(owner, ())),
            key=lambda e: sort_key(e.prefix),
        )

    def get(self, prefix: IPv4Network) -> Entry | None:
        """The visible entry of exactly this prefix."""
        return self._visible.get(prefix)

    def lookup(self, ip: IPv4Address) -> Entry | None:
        """Longest-prefix match, as the BPF LPM map answers."""
        for length in range(32, -1, -1):
            entry = self._visible.get(IPv4Network((ip, length), strict=False))
            if entry is not None:
                return entry
        return None

    def entries(self) -> dict[IPv4Network, Entry]:
        """A snapshot of every visible entry, ordered by address then prefix length."""
        return {p: self._visible[p] for p in sorted(self._visible, key=sort_key)}

    async def wait_changed(self, since: int) -> int:
        """Return the revision once it is past `since`."""
        while self.revision <= since:
            await self._changed.wait()
        return self.revision


def sort_key(prefix: IPv4Network) -> tuple[int, int]:
    """Order prefixes by address, then by length."""
    return int(prefix.network_address), prefix.prefixlen


def diff(
    applied: Mapping[IPv4Network, Entry], desired: Mapping[IPv4Network, Entry]
) -> tuple[list[Entry], list[IPv4Network]]:
    """What a reconciler must write and delete to turn `applied` into `desired`."""
    upserts = [e for p, e in desired.items() if applied.get(p) != e]
    deletes = [p for p in applied if p not in desired]
    return upserts, deletes
