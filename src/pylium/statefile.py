"""Crash-safe JSON state files: a reader sees the old content or the new, never a torn write.

Stdlib only. Used by the agent's IPAM and endpoint state, which a restarted agent reads back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> None:
    """Write `data` as JSON to `path` atomically and durably.

    Writes a temporary file in the same directory, fsyncs it, renames it over `path` and fsyncs
    the directory, so after a crash (even SIGKILL or power loss) the file holds either the old
    or the new content.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_json(path: Path) -> Any:
    """Read a JSON file written by `write_json`; raises FileNotFoundError if absent."""
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def remove(path: Path) -> None:
    """Remove a state file durably; absent already is success."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make renames and unlinks inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
