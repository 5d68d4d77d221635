"""Cilium's deletion queue: DELs that could not reach the agent, kept for it to replay.

A runtime treats a failed DEL as a leak it will retry forever, while the agent may simply be
restarting. So DEL with no agent writes the request as one JSON file per attachment into
`paths.delete_queue_dir(socket)` and succeeds; the agent drains the directory when it starts.
The directory is bounded, and writers serialise on an fcntl lock so the bound holds.

File format (one per attachment, `<containerID>.<ifname>.json`)::

    {"containerID": "...", "ifname": "eth0", "netns": "...", "queuedAt": 1764170000.0}
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from pylium.cni.errors import TryAgainLater

MAX_QUEUED = 256
"""Beyond this many queued DELs the plugin fails the DEL instead (the runtime retries)."""

LOCK_NAME = ".lock"


def queue_delete(queue_dir: Path, container_id: str, ifname: str, netns: str) -> Path:
    """Queue a DEL for the agent; returns the file written.

    Queueing the same attachment twice rewrites one file. Raises TryAgainLater when the
    queue is full.
    """
    queue_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = queue_dir / f"{container_id}.{ifname}.json"
    with open(queue_dir / LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        queued = [p for p in queue_dir.glob("*.json") if p != target]
        if len(queued) >= MAX_QUEUED:
            raise TryAgainLater(
                "agent unreachable and the deletion queue is full",
                f"{len(queued)} requests wait in {queue_dir}; start pylium-agent to drain them",
            )
        entry: dict[str, object] = {
            "containerID": container_id,
            "ifname": ifname,
            "netns": netns,
            "queuedAt": time.time(),
        }
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, target)  # readers never see a half-written file
    return target
