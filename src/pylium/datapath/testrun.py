"""BPF_PROG_TEST_RUN: run a loaded program on a crafted packet, in the kernel, without
attaching it. For tc programs the packet starts at the Ethernet header and `skb->ifindex` is
the loopback device (1) unless a context says otherwise."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from pylium.datapath import libbpf
from pylium.datapath.loader import Program

# An skb may grow (e.g. encapsulation) while the program runs; leave room for it.
_HEADROOM = 256


class _TestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


@dataclass(frozen=True)
class RunResult:
    """What one BPF_PROG_TEST_RUN returned."""

    retval: int
    """The program's return code (for tc: TC_ACT_OK 0, TC_ACT_SHOT 2, TC_ACT_REDIRECT 7)."""
    data: bytes
    """The packet after the program ran (rewrites applied)."""
    duration_ns: int
    """Average run time per repetition."""


def prog_run(program: Program, data: bytes, repeat: int = 1) -> RunResult:
    """Run `program` on `data` `repeat` times; the packet result is from the last run."""
    data_in = ctypes.create_string_buffer(data, len(data))
    data_out = ctypes.create_string_buffer(len(data) + _HEADROOM)
    opts = _TestRunOpts(
        sz=ctypes.sizeof(_TestRunOpts),
        data_in=ctypes.addressof(data_in),
        data_out=ctypes.addressof(data_out),
        data_size_in=len(data),
        data_size_out=len(data_out),
        repeat=repeat,
    )
    libbpf.check(
        libbpf.lib().bpf_prog_test_run_opts(program.fd, ctypes.byref(opts)),
        f"test run {program.name}",
    )
    return RunResult(
        retval=opts.retval,
        data=data_out.raw[: opts.data_size_out],
        duration_ns=opts.duration,
    )
