"""The BPF filesystem: pins live there, and a pin directory elsewhere fails at load time with
an obscure errno, so the agent checks first (mounting bpffs is the set-up's job)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

BPF_FS_MAGIC = 0xCAFE4A11
"""statfs(2) f_type of bpffs."""

_libc = ctypes.CDLL(None, use_errno=True)


class BpffsMissing(RuntimeError):
    """The pin directory is not on a BPF filesystem."""


def fs_type(path: Path) -> int:
    """statfs(2) f_type of the filesystem holding `path`."""
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on x86_64
    if _libc.statfs(os.fsencode(path), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"statfs {path}: {os.strerror(err)}")
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def require_bpffs(pin_dir: Path) -> None:
    """Raise BpffsMissing unless `pin_dir` (or its nearest existing parent) is on bpffs."""
    existing = pin_dir
    while not existing.exists():
        existing = existing.parent
    if fs_type(existing) != BPF_FS_MAGIC:
        raise BpffsMissing(
            f"{pin_dir} is not on a BPF filesystem ({existing} is not bpffs): "
            "mount it first with `mount -t bpf bpf /sys/fs/bpf`"
        )
