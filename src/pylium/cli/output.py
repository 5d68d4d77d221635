"""Output helpers every command shares: kubectl-style tables and ages, JSON/YAML documents,
and errors (`error: ...` on stderr, non-zero exit)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import click

NONE = "<none>"
"""What a table shows for an absent value, as kubectl does."""


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` to stderr and exit with `code`."""
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(code)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns left-aligned, three spaces apart, headers upper case (kubectl's layout)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [
        "   ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in [list(headers), *rows]
    ]
    return "\n".join(lines)


def human_duration(seconds: float) -> str:
    """An age as kubectl prints it: 45s, 3m20s, 15m, 5h2m, 20h, 3d4h, 40d, 3y."""
    s = max(int(seconds), 0)
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y"


def age(timestamp: str | None, now: datetime | None = None) -> str:
    """The age of an RFC 3339 timestamp (`2026-11-26T15:00:00Z`), or <unknown>."""
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    return human_duration(((now or datetime.now(UTC)) - then).total_seconds())


def to_json(doc: Any) -> str:
    """Stable, machine-readable JSON (4-space indent, as kubectl)."""
    return json.dumps(doc, indent=4)


def to_yaml(doc: Any) -> str:
    """YAML in the document's own key order."""
    import yaml

    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False).rstrip("\n")


def list_document(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Several objects as one `kind: List` document."""
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}
