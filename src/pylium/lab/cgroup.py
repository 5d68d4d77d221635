"""cgroup v2 subtrees of lab nodes (`/sys/fs/cgroup/unified/pylium/<lab>/<node>/`).

Pod processes join their node's subtree before they exec, so per-node cgroup programs
(socket-level load balancing) see only that node's pods.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path


def create(path: Path, attempts: int = 3) -> None:
    """Create the subtree (and its parents); existing is fine. Retried when a parent vanishes
    meanwhile: another lab's `down` removes the shared `pylium` parent once it is empty."""
    for attempt in range(attempts):
        try:
            path.mkdir(parents=True, exist_ok=True)
            return
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise


def add_pid(path: Path, pid: int) -> None:
    """Move a process (all its threads) into the cgroup."""
    with open(path / "cgroup.procs", "w") as f:
        f.write(str(pid))


def pids(path: Path) -> list[int]:
    """Processes in the cgroup itself (not its children); [] when it does not exist."""
    try:
        text = (path / "cgroup.procs").read_text()
    except FileNotFoundError:
        return []
    return [int(line) for line in text.split()]


def remove(path: Path, timeout: float = 5.0) -> None:
    """Kill every process left in the cgroup, then remove it and its now-empty lab parent.

    Missing is success. cgroup.kill (kernel >= 5.14) kills the whole subtree atomically,
    so no process can fork its way out while we look.
    """
    if not path.exists():
        return
    with contextlib.suppress(FileNotFoundError):
        (path / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + timeout
    while True:
        try:
            path.rmdir()
            break
        except FileNotFoundError:
            break
        except OSError as e:
            # EBUSY until the killed processes have been reaped.
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    with contextlib.suppress(OSError):
        os.rmdir(path.parent)
