"""The ipcache map reconciler: the agent's ipcache table, written into `pylium_ipcache4`.

The programs look up every destination (from-container) and source (to-container, native
routing) there, longest prefix first, for its security identity and, in tunnel mode, the
underlay IP of the node behind it (bpf/lib/ipcache.h; bytes from `pylium.ipcache.encoding`).

The first write waits for the table to reflect the store's first lists, then makes the map
equal to the table (deleting what a previous agent wrote that no longer holds); after that
every table revision is applied as a diff, bookkeeping only what the kernel accepted.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Network
from typing import Any

from pylium.datapath.errors import BpfError
from pylium.datapath.maps import Map, RawMap
from pylium.ipcache import IPCache, decode_key, decode_value, diff, lpm_key, lpm_value
from pylium.ipcache.table import Entry, sort_key

log = logging.getLogger(__name__)


class IPCacheKey(ctypes.Structure):
    """struct ipcache_key (8 bytes; layout in pylium.ipcache.encoding)."""

    _fields_ = [("prefixlen", ctypes.c_uint32), ("ip", ctypes.c_uint8 * 4)]

    @classmethod
    def of(cls, prefix: IPv4Network) -> IPCacheKey:
        return cls.from_buffer_copy(lpm_key(prefix))


class IPCacheValue(ctypes.Structure):
    """struct ipcache_value (12 bytes)."""

    _fields_ = [
        ("sec_identity", ctypes.c_uint32),
        ("tunnel_endpoint", ctypes.c_uint8 * 4),
        ("node_id", ctypes.c_uint16),
        ("encrypt_key", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
    ]

    @classmethod
    def of(cls, entry: Entry) -> IPCacheValue:
        return cls.from_buffer_copy(lpm_value(entry))


def ipcache_map(raw: RawMap) -> Map[IPCacheKey, IPCacheValue]:
    """The typed view of a `pylium_ipcache4` map."""
    return Map(raw, IPCacheKey, IPCacheValue)


def read_ipcache(raw: RawMap) -> dict[IPv4Network, bytes]:
    """The map's contents: prefix -> the raw 12-byte value (decode with ipcache.decode_value)."""
    return {decode_key(bytes(k)): bytes(v) for k, v in ipcache_map(raw).items()}


class IPCacheMapReconciler:
    """Keeps `pylium_ipcache4` equal to an IPCache's table.

    Args:
        ipcache: the started ipcache component.
        raw: the map (shared with the programs).
        on_change: awaited after each applied revision (endpoint identities, tunnel routes).
        retry_interval: seconds before a failed write is tried again.
    """

    def __init__(
        self,
        ipcache: IPCache,
        raw: RawMap,
        on_change: Callable[[], Awaitable[None]] | None = None,
        retry_interval: float = 1.0,
    ) -> None:
        self._ipcache = ipcache
        self._map = ipcache_map(raw)
        self._on_change = on_change
        self._retry = retry_interval
        self.applied: dict[IPv4Network, Entry] = {}
        """What the map holds (as far as this reconciler wrote it)."""
        self.revision = -1
        """The table revision last applied in full."""

    async def run(self) -> None:
        """Reconcile until cancelled."""
        table = self._ipcache.table
        await self._ipcache.wait_synced()
        self._prune_foreign()
        while True:
            revision = table.revision
            try:
                self._apply(table.entries())
            except BpfError:
                log.exception("writing the ipcache map failed; retrying")
                await asyncio.sleep(self._retry)
                continue
            self.revision = revision
            if self._on_change is not None:
                await self._on_change()
            await table.wait_changed(revision)

    def _prune_foreign(self) -> None:
        """Delete what the map holds but the synced table does not (left by an earlier agent);
        the rest is rewritten by the first apply."""
        desired = self._ipcache.table.entries()
        stale = [k for k in self._map if decode_key(bytes(k)) not in desired]
        for key in stale:
            self._map.delete(key, missing_ok=True)
        if stale:
            log.info("pruned %d stale ipcache map entries", len(stale))

    def _apply(self, desired: dict[IPv4Network, Entry]) -> None:
        upserts, deletes = diff(self.applied, desired)
        for entry in upserts:
            self._map.update(IPCacheKey.of(entry.prefix), IPCacheValue.of(entry))
            self.applied[entry.prefix] = entry
        for prefix in deletes:
            self._map.delete(IPCacheKey.of(prefix), missing_ok=True)
            del self.applied[prefix]


def ipcache_json(
    table: dict[IPv4Network, Entry], kernel: dict[IPv4Network, bytes]
) -> dict[str, Any]:
    """The `GET /v1/ipcache` body: the table (desired) and the map (what the kernel holds)."""
    return {
        "entries": [
            {
                "prefix": str(e.prefix),
                "identity": e.identity,
                "tunnelEndpoint": str(e.tunnel_endpoint) if e.tunnel_endpoint else None,
                "node": e.node,
                "source": str(e.source),
                "owner": e.owner,
            }
            for e in table.values()
        ],
        "map": [
            {
                "prefix": str(prefix),
                "identity": value.identity,
                "tunnelEndpoint": str(value.tunnel_endpoint) if value.tunnel_endpoint else None,
                "flags": value.flags,
            }
            for prefix, value in (
                (p, decode_value(kernel[p])) for p in sorted(kernel, key=sort_key)
            )
        ],
    }
