"""Processes the lab starts: daemons in a node namespace, found and ended by pid.

Every process is started in its own session, so it outlives the command that started it and
no terminal signal reaches it; it is ended only by its recorded pid (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def start(
    argv: list[str], log: Path, preexec: Callable[[], None] | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` detached, stdout and stderr appended to `log`.

    `preexec` runs in the child before exec (e.g. to join a cgroup). A caller that outlives
    the child keeps the returned handle to collect its exit code; dropping it is fine too.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,
        )
    return proc


def cmdline(pid: int) -> list[str]:
    """The argv of a live process, or [] if it is gone (or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


Match = Callable[[list[str]], bool]
"""Tells our process from another by its argv (the kernel reuses pids)."""


def state(pid: int | None) -> str:
    """The kernel's one-letter state of `pid` (R, S, D, T, Z, ...), "" if it is gone."""
    if not pid:
        return ""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    # The state follows the parenthesised command name, which may itself hold spaces.
    return stat.rpartition(")")[2].split()[0]


def alive(pid: int | None, match: Match | None = None) -> bool:
    """Whether `pid` runs, not as a zombie (and, given `match`, is the process we mean)."""
    if not pid or state(pid) in ("", "Z", "X"):
        return False
    return match is None or match(cmdline(pid))


def stop(pid: int | None, match: Match | None = None, timeout: float = 5.0) -> str:
    """SIGTERM the process, SIGKILL it if it outlives `timeout`; gone already is fine.

    Returns "" once it has ended, else its state after SIGKILL had `timeout` too (a process
    stuck in the kernel, "D", ends only when the kernel lets it go): the caller goes on rather
    than waiting forever, and says so.
    """
    if not alive(pid, match):
        return ""
    assert pid is not None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        _signal(pid, sig)
        deadline = time.monotonic() + timeout
        while alive(pid):
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        else:
            return ""
    return state(pid)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def find(match: Match) -> list[int]:
    """Pids (other than ours) whose argv `match` accepts."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            argv = cmdline(int(entry))
            if argv and match(argv):
                found.append(int(entry))
    return found
