"""Errors of the BPF datapath binding.

BpfError                 any failed libbpf or bpf(2) call; carries errno and context
├── KeyNotFound          a map key that is not there (ENOENT)
├── NotSupported         a kernel feature this machine lacks (feature name, minimum kernel)
└── VerifierError        the verifier rejected a program; `log` holds its full log
"""

from __future__ import annotations

import errno as errno_mod
import os


class BpfError(OSError):
    """A failed BPF operation: `errno` is the cause, the message says what was attempted."""

    def __init__(self, err: int, context: str) -> None:
        super().__init__(err, f"{context}: {os.strerror(err)}")
        self.context = context


class KeyNotFound(BpfError):
    """The key is not in the map."""

    def __init__(self, context: str) -> None:
        super().__init__(errno_mod.ENOENT, context)


class NotSupported(BpfError):
    """The running kernel lacks a feature (e.g. "tcx", "batch map operations")."""

    def __init__(self, feature: str, min_kernel: str, err: int = errno_mod.EOPNOTSUPP) -> None:
        super().__init__(err, f"{feature} not supported (needs Linux {min_kernel})")
        self.feature = feature
        self.min_kernel = min_kernel


class VerifierError(BpfError):
    """Loading failed; `log` is everything libbpf and the verifier said about it."""

    def __init__(self, err: int, context: str, log: str) -> None:
        super().__init__(err, context)
        self.log = log

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.log}"
