"""Named network namespaces: made with `ip netns`, entered with nsenter or setns(2).

Daemons enter a namespace with `nsenter --net=/var/run/netns/<ns>` rather than `ip netns exec`,
whose private mount namespace would hide namespaces created after the daemon started.
"""

from __future__ import annotations

import ctypes
import os
import re
import socket
import subprocess
import threading
from pathlib import Path

from pylium import paths

_CLONE_NEWNET = 0x40000000


class NetnsError(Exception):
    """An `ip netns` command failed."""


def netns_path(name: str) -> Path:
    """The bind mount of a named namespace."""
    return paths.NETNS_DIR / name


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def create(name: str) -> Path:
    """Create a namespace with its loopback up; returns its path."""
    _ip("netns", "add", name)
    _ip("-n", name, "link", "set", "lo", "up")
    return netns_path(name)


def delete(name: str) -> None:
    """Delete a namespace; already gone is success. Devices inside it go with it once no
    process holds it any more."""
    if not netns_path(name).exists():
        return
    _ip("netns", "delete", name)


def exists(name: str) -> bool:
    """Whether the namespace is mounted."""
    return netns_path(name).exists()


def matching(pattern: re.Pattern[str]) -> list[str]:
    """Names of mounted namespaces that fully match `pattern`."""
    try:
        names = os.listdir(paths.NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if pattern.fullmatch(n))


def nsenter_argv(name: str, argv: list[str]) -> list[str]:
    """The command line that runs `argv` inside the namespace."""
    return ["nsenter", f"--net={netns_path(name)}", "--", *argv]


def enter(path: str | Path) -> None:
    """Move the calling thread into the namespace at `path` (setns(2); Python 3.11 has no
    os.setns). Call it from a single-threaded process: other threads stay where they were."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def can_connect(name: str, host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP connect to host:port from inside the named namespace succeeds (tried from
    a throwaway thread, so the caller stays where it is)."""
    ok: list[bool] = []

    def attempt() -> None:
        try:
            enter(netns_path(name))
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            ok.append(False)

    thread = threading.Thread(target=attempt, name=f"connect:{name}")
    thread.start()
    thread.join()
    return ok == [True]
