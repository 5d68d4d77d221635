"""The ipcache: every IP/prefix the node may see -> security identity + hosting node (DESIGN §3).

- `table`: the desired-state table (per-owner claims, source precedence, change revision).
- `controller`: the component filling it from Pods, Namespaces, Nodes and CiliumNodes.
- `encoding`: the BPF LPM_TRIE key/value layout a datapath reconciler writes.
- `dump`: the table as text.
"""

from __future__ import annotations

from pylium.ipcache.controller import WORLD_PREFIX, IPCache, IPCacheParams
from pylium.ipcache.dump import render
from pylium.ipcache.encoding import Value, decode_key, decode_value, lpm_key, lpm_value
from pylium.ipcache.table import Entry, IPCacheTable, Source, diff

__all__ = [
    "WORLD_PREFIX",
    "Entry",
    "IPCache",
    "IPCacheParams",
    "IPCacheTable",
    "Source",
    "Value",
    "decode_key",
    "decode_value",
    "diff",
    "lpm_key",
    "lpm_value",
    "render",
]
