"""The `pylium_ct4_global` conntrack map (bpf/lib/ct.h) and its garbage collection.

Entries carry an expiry (`lifetime`, seconds of CLOCK_MONOTONIC, the clock of
bpf_ktime_get_ns); the datapath refreshes it per packet and user space deletes what expired.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import time
from enum import IntEnum, IntFlag

from pylium.datapath.maps import Map


class TupleFlags(IntEnum):
    """Which program's scope an entry belongs to."""

    OUT = 0  # from-container (egress)
    IN = 1  # to-container (ingress)


class CtStatus(IntEnum):
    """A packet's conntrack status (also the reason of a trace event)."""

    NEW = 0
    ESTABLISHED = 1
    REPLY = 2


class CtFlags(IntFlag):
    TX_CLOSING = 0x01
    RX_CLOSING = 0x02
    SEEN_REPLY = 0x04
    SEEN_NON_SYN = 0x08
    RESET = 0x10


class Ct4Tuple(ctypes.Structure):
    """struct ct4_tuple: addresses and ports in network byte order."""

    _fields_ = [
        ("daddr", ctypes.c_uint8 * 4),
        ("saddr", ctypes.c_uint8 * 4),
        ("dport", ctypes.c_uint16),
        ("sport", ctypes.c_uint16),
        ("nexthdr", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
    ]

    @classmethod
    def make(
        cls,
        saddr: str,
        daddr: str,
        sport: int,
        dport: int,
        proto: int,
        flags: TupleFlags,
    ) -> Ct4Tuple:
        return cls(
            daddr=(ctypes.c_uint8 * 4)(*ipaddress.IPv4Address(daddr).packed),
            saddr=(ctypes.c_uint8 * 4)(*ipaddress.IPv4Address(saddr).packed),
            dport=socket.htons(dport),
            sport=socket.htons(sport),
            nexthdr=proto,
            flags=flags,
        )

    def __repr__(self) -> str:
        return (
            f"Ct4Tuple({ipaddress.IPv4Address(bytes(self.saddr))}:{socket.ntohs(self.sport)} -> "
            f"{ipaddress.IPv4Address(bytes(self.daddr))}:{socket.ntohs(self.dport)} "
            f"proto={self.nexthdr} {TupleFlags(self.flags).name})"
        )


class CtEntry(ctypes.Structure):
    """struct ct_entry."""

    _fields_ = [
        ("tx_packets", ctypes.c_uint64),
        ("tx_bytes", ctypes.c_uint64),
        ("rx_packets", ctypes.c_uint64),
        ("rx_bytes", ctypes.c_uint64),
        ("lifetime", ctypes.c_uint32),
        ("flags", ctypes.c_uint16),
        ("tx_flags_seen", ctypes.c_uint8),
        ("rx_flags_seen", ctypes.c_uint8),
    ]


def monotonic_seconds() -> int:
    """Now on the datapath's clock."""
    return int(time.clock_gettime(time.CLOCK_MONOTONIC))


def gc(ct: Map[Ct4Tuple, CtEntry], now: int | None = None) -> int:
    """Delete expired entries; returns how many. Keys are collected before any delete."""
    now = monotonic_seconds() if now is None else now
    expired = [key for key, entry in ct.items() if entry.lifetime < now]
    deleted = 0
    for key in expired:
        entry = ct.get(key)
        # A packet may have refreshed it since the scan.
        if entry is not None and entry.lifetime < now:
            ct.delete(key, missing_ok=True)
            deleted += 1
    return deleted
