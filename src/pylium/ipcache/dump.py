"""The ipcache as text, one line per entry (what `pylium` and tests show)."""

from __future__ import annotations

from collections.abc import Iterable

from pylium.ipcache.table import Entry, sort_key


def render(entries: Iterable[Entry]) -> str:
    """`10.244.1.5/32 identity=258 tunnel=192.168.10.2 node=lab-node1 source=pod`, sorted by
    address; `tunnel=-` when not tunnelled, `node=-` for the world."""
    lines = []
    for e in sorted(entries, key=lambda e: sort_key(e.prefix)):
        tunnel = e.tunnel_endpoint or "-"
        key = f" encrypt={e.encrypt_key}" if e.encrypt_key else ""
        lines.append(
            f"{e.prefix} identity={e.identity} tunnel={tunnel} node={e.node or '-'}"
            f" source={e.source}{key}"
        )
    return "".join(f"{line}\n" for line in lines)
