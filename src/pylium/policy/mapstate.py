"""An endpoint's computed policy as policy-map entries, and how the datapath looks them up.

Keys follow Cilium's `struct policy_key` (`bpf/lib/policy.h`): an LPM trie key of the peer
identity (`sec_label`, 0 = any identity), the direction bit, the protocol (0 = any) and the
destination port, where a port range is split into power-of-two blocks, each one key whose
prefix length leaves the block's low bits out (`port_range_prefixes`).

Lookup, as the datapath must do it: one LPM lookup with the peer's identity, one with the
CIDR class of the peer's address (if a CIDR rule's prefix holds it) and one with identity 0; a
deny hit in any wins, otherwise any allow hit passes. `EndpointPolicy.entries`
never holds an allow that a deny of the same or any identity covers, so a single LPM lookup
per identity cannot return an allow shadowing a broader deny.

Encoding (`encode_key` / `encode_entry`, for the datapath step)::

    struct policy_key {            // 12 bytes, BPF_MAP_TYPE_LPM_TRIE, BPF_F_NO_PREALLOC
        __u32 prefixlen;           // 40 + (protocol ? 8 : 0) + port prefix bits
        __u32 sec_label;           // host byte order; 0 = any identity
        __u8  egress:1, pad:7;
        __u8  protocol;            // IPPROTO_*, 0 = any
        __be16 dport;              // ICMP rules: the ICMP type
    };
    struct policy_entry {          // 24 bytes
        __be16 proxy_port;         // 0 (no L7 yet)
        __u8  deny:1, reserved:2, lpm_prefix_length:5;  // port prefix bits (0..16)
        __u8  auth_type;           // 0
        __u32 cookie;              // names the deciding rules in verdict events (see below)
        __u64 packets, bytes;      // written by the datapath
    };

Verdict events name the policy through the entry's cookie: the agent numbers each distinct set
of rule labels (`PolicyEntry.rules`), the datapath copies the matched entry's cookie into its
policy-verdict / drop event, and Hubble maps it back to `netpol:x/name spec.ingress[0]`
(Cilium's `ingress_allowed_by` / `egress_denied_by`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pylium.policy.rules import Direction

STATIC_PREFIX_BITS = 40
"""sec_label (32) + the direction byte (8): always matched exactly."""
PROTOCOL_BITS = 8
PORT_BITS = 16
DROP_POLICY_DENIED = 133
"""Drop reason: no allow entry matched (default deny)."""
DROP_POLICY_DENY = 181
"""Drop reason: a deny entry matched."""


@dataclass(frozen=True)
class PolicyKey:
    """One policy-map key."""

    direction: Direction
    identity: int
    """Peer identity; 0 = any."""
    protocol: int
    """IP protocol; 0 = any (the port is then 0 too)."""
    port: int = 0
    port_prefix: int = 0
    """How many high bits of the port are matched: 16 = one port, 0 = every port."""

    @property
    def sort_key(self) -> tuple[str, int, int, int, int]:
        """Dump order: direction, identity, protocol, port, prefix."""
        return (self.direction.value, self.identity, self.protocol, self.port, self.port_prefix)

    @property
    def prefix_len(self) -> int:
        """The LPM prefix length of the key."""
        if not self.protocol:
            return STATIC_PREFIX_BITS
        return STATIC_PREFIX_BITS + PROTOCOL_BITS + self.port_prefix

    def covers(self, other: PolicyKey) -> bool:
        """Whether every packet `other` matches is matched by this key too (identity 0 covers
        every identity)."""
        if self.direction != other.direction or self.identity not in (0, other.identity):
            return False
        if self.protocol == 0:
            return True
        if self.protocol != other.protocol or other.port_prefix < self.port_prefix:
            return False
        return self.port_matches(other.port)

    def port_matches(self, port: int) -> bool:
        """Whether a destination port falls in the key's block."""
        shift = PORT_BITS - self.port_prefix
        return self.port_prefix == 0 or (port >> shift) == (self.port >> shift)

    def __str__(self) -> str:
        ident = "ANY" if self.identity == 0 else str(self.identity)
        if not self.protocol:
            return f"{self.direction.value} {ident} ANY"
        if self.port_prefix == 0:
            return f"{self.direction.value} {ident} {self.protocol}/ANY"
        last = self.port | ((1 << (PORT_BITS - self.port_prefix)) - 1)
        ports = str(self.port) if last == self.port else f"{self.port}-{last}"
        return f"{self.direction.value} {ident} {self.protocol}/{ports}"


@dataclass(frozen=True)
class PolicyEntry:
    """One policy-map value: allow or deny, and the rules that put it there."""

    deny: bool
    rules: frozenset[str]
    """Labels of the deciding rules (`netpol:x/base spec.ingress[0]`), for traces and for
    naming the policy in verdict events."""


def port_range_prefixes(first: int, last: int) -> list[tuple[int, int]]:
    """Split an inclusive port range into (port, prefix bits) blocks, largest first as Cilium
    does (`pkg/policy/types`): 80-81 -> [(80, 15)], 1-65535 -> 16 blocks, 0-65535 -> [(0, 0)].
    """
    if not 0 <= first <= last <= 0xFFFF:
        raise ValueError(f"bad port range {first}-{last}")
    out: list[tuple[int, int]] = []
    port = first
    while port <= last:
        size = port & -port if port else 1 << PORT_BITS
        while port + size - 1 > last:
            size >>= 1
        out.append((port, PORT_BITS - size.bit_length() + 1))
        port += size
    return out


def encode_key(key: PolicyKey) -> bytes:
    """The 12-byte `struct policy_key` (little-endian host, as on x86-64 and arm64)."""
    egress = 1 if key.direction is Direction.EGRESS else 0
    return struct.pack("<IIBB", key.prefix_len, key.identity, egress, key.protocol) + struct.pack(
        ">H", key.port
    )


def encode_entry(key: PolicyKey, entry: PolicyEntry, cookie: int = 0) -> bytes:
    """The 24-byte `struct policy_entry` with zeroed counters and the rules' cookie."""
    flags = (1 if entry.deny else 0) | (key.port_prefix << 3)
    return struct.pack(">H", 0) + struct.pack("<BBIQQ", flags, 0, cookie, 0, 0)
