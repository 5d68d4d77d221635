"""BPF run-time statistics: how often a program ran and how long it took, as the kernel counts.

The kernel counts `run_cnt`/`run_time_ns` per program only while statistics are enabled, a
global switch (`kernel.bpf_stats_enabled`). `run_time_stats()` turns it on with
BPF_ENABLE_STATS rather than the sysctl: the kernel keeps it on while the returned fd is open
and drops it when the fd closes, also when the process dies, so a crashed benchmark cannot
leave the machine's BPF programs paying for the clock reads.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pylium.datapath import libbpf
from pylium.datapath.loader import Program

_BPF_STATS_RUN_TIME = 0


class _BpfProgInfo(ctypes.Structure):
    """struct bpf_prog_info (linux/bpf.h) up to the run-time counters."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
    ]


@dataclass(frozen=True)
class RunStats:
    """A program's counters at one moment, or the difference of two readings."""

    runs: int
    run_time_ns: int

    def __sub__(self, earlier: RunStats) -> RunStats:
        return RunStats(self.runs - earlier.runs, self.run_time_ns - earlier.run_time_ns)

    def __add__(self, other: RunStats) -> RunStats:
        return RunStats(self.runs + other.runs, self.run_time_ns + other.run_time_ns)

    @property
    def ns_per_run(self) -> float:
        """Average cost of one run (one skb for tc programs); 0 when it did not run."""
        return self.run_time_ns / self.runs if self.runs else 0.0


def read(program: Program) -> RunStats:
    """The program's counters now (they advance only while statistics are enabled)."""
    info = _BpfProgInfo()
    libbpf.obj_info(program.fd, info)
    return RunStats(runs=info.run_cnt, run_time_ns=info.run_time_ns)


@contextmanager
def run_time_stats() -> Iterator[None]:
    """Keep BPF run-time statistics enabled for the duration of the block."""
    # libbpf 1.1's `int bpf_enable_stats(enum bpf_stats_type)`: int in, int (fd or -errno) out,
    # which are ctypes' defaults, so it needs no declared signature.
    fd = libbpf.check(libbpf.lib().bpf_enable_stats(_BPF_STATS_RUN_TIME), "enable BPF stats")
    try:
        yield
    finally:
        os.close(fd)
