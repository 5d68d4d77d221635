"""The per-CPU `pylium_metrics` map (bpf/lib/metrics.h): packets and bytes by reason and
direction, summed over CPUs."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from pylium.datapath.events import Direction, DropReason
from pylium.datapath.maps import Map


class MetricsKey(ctypes.Structure):
    """struct metrics_key."""

    _fields_ = [("reason", ctypes.c_uint8), ("dir", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 6)]


class MetricsValue(ctypes.Structure):
    """struct metrics_value (per CPU)."""

    _fields_ = [("count", ctypes.c_uint64), ("bytes", ctypes.c_uint64)]


@dataclass(frozen=True)
class Counter:
    packets: int
    bytes: int


def read_metrics(
    metrics: Map[MetricsKey, MetricsValue],
) -> dict[tuple[DropReason, Direction], Counter]:
    """Every counter, summed over CPUs, keyed by (reason, direction)."""
    out: dict[tuple[DropReason, Direction], Counter] = {}
    for key in list(metrics.keys()):
        per_cpu = metrics.lookup_all_cpus(key)
        out[(DropReason(key.reason), Direction(key.dir))] = Counter(
            packets=sum(v.count for v in per_cpu), bytes=sum(v.bytes for v in per_cpu)
        )
    return out
