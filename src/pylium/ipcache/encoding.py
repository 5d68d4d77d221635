"""The ipcache as bytes for a BPF LPM_TRIE map (what the datapath reconciler writes).

Key, 8 bytes (`struct ipcache_key`)::

    __u32 prefixlen;   host byte order, as the kernel's struct bpf_lpm_trie_key wants
    __be32 ip;         network byte order; bits past prefixlen are zero

Value, 12 bytes (`struct ipcache_value`)::

    __u32 sec_identity;     host byte order
    __be32 tunnel_endpoint; network byte order, 0.0.0.0 when not tunnelled
    __u16 node_id;          host byte order, 0 until nodes are numbered
    __u8 encrypt_key;       0: no encryption
    __u8 flags;             IPCACHE_FLAG_* below

The map is created with BPF_F_NO_PREALLOC (required for LPM tries), key_size 8, value_size 12.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from pylium.ipcache.table import Entry

KEY = struct.Struct("=I4s")
VALUE = struct.Struct("=I4sHBB")

IPCACHE_FLAG_SKIP_TUNNEL = 1 << 0
"""Reach the address natively even in tunnel mode (Cilium's flag_skip_tunnel); unused yet."""
IPCACHE_FLAG_HAS_TUNNEL_EP = 1 << 1
"""tunnel_endpoint is set (Cilium's flag_has_tunnel_ep)."""


@dataclass(frozen=True)
class Value:
    """A decoded map value."""

    identity: int
    tunnel_endpoint: IPv4Address | None
    node_id: int = 0
    encrypt_key: int = 0
    flags: int = 0


def lpm_key(prefix: IPv4Network) -> bytes:
    """The map key of a prefix."""
    return KEY.pack(prefix.prefixlen, prefix.network_address.packed)


def decode_key(data: bytes) -> IPv4Network:
    """The prefix of a map key."""
    prefixlen, ip = KEY.unpack(data)
    return IPv4Network((IPv4Address(ip), prefixlen))


def lpm_value(entry: Entry, node_id: int = 0) -> bytes:
    """The map value of an entry."""
    tunnel = entry.tunnel_endpoint
    flags = IPCACHE_FLAG_HAS_TUNNEL_EP if tunnel is not None else 0
    return VALUE.pack(
        entry.identity,
        (tunnel or IPv4Address(0)).packed,
        node_id,
        entry.encrypt_key,
        flags,
    )


def decode_value(data: bytes) -> Value:
    """A map value, decoded."""
    identity, tunnel, node_id, key, flags = VALUE.unpack(data)
    endpoint = IPv4Address(tunnel) if flags & IPCACHE_FLAG_HAS_TUNNEL_EP else None
    return Value(identity, endpoint, node_id, key, flags)
