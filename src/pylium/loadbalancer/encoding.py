"""The LB maps as bytes (what the datapath reconciler writes), laid out as Cilium's
`bpf/lib/lb.h` IPv4 maps. Multi-byte fields marked `__be` are network byte order, the others
host byte order (little-endian here).

`pylium_lb4_services` (hash), key 12 bytes (`struct lb4_key`)::

    __be32 address;       frontend IP
    __be16 dport;         frontend port
    __u16  backend_slot;  0: the service entry, 1..count+qcount: one backend each
    __u8   proto;         IPPROTO_TCP 6, IPPROTO_UDP 17, IPPROTO_SCTP 132
    __u8   scope;         0 external, 1 internal (second row of a two-scope service)
    __u8   pad[2];

value 12 bytes (`struct lb4_service`)::

    __u32  backend_id;    slot > 0: the backend; slot 0: affinity timeout (low 24 bits,
                          seconds) | LB algorithm << 24 (0 undef, 1 random, 2 maglev)
    __u16  count;         slot 0: active slots
    __u16  rev_nat_index; the service (frontend) id
    __u8   flags;         SVC_FLAG_* below
    __u8   flags2;        SVC_FLAG2_* below
    __u16  qcount;        slot 0: quarantine slots after the active ones

`pylium_lb4_backends` (hash), key `__u32 backend_id`, value 12 bytes (`struct lb4_backend`)::

    __be32 address; __be16 port; __u8 proto; __u8 flags (BE_STATE_*);
    __u16 cluster_id; __u8 zone; __u8 pad;

`pylium_lb4_reverse_nat` (hash), key `__u16 rev_nat_index`, value 8 bytes::

    __be32 address; __be16 port; __u16 pad;

`pylium_lb_affinity_match` (hash), key 8 bytes `{__u32 backend_id; __u16 rev_nat_id;
__u16 pad}`, value `__u8` 0: the backends a service's affinity entries may point at. The
affinity entries themselves (`pylium_lb4_affinity`, LRU, key `{__u64 client_id; __u16
rev_nat_id; __u8 netns; __u8 pad[5]}` where client_id is the netns cookie (socket LB, netns=1)
or the client IPv4 (per-packet LB, netns=0), value `{__u64 last_used; __u32 backend_id; __u32
pad}`) are written by the datapath, never by the agent (bpf/lib/lb.h).

`pylium_lb4_maglev` (hash of maps), key `__u16 rev_nat_index` -> inner array map with one
element: `__u32 backend_ids[M]` (M = table size, the same for every service of a node).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from pylium.loadbalancer.model import BackendState, L4Addr

PROTOCOLS = {"TCP": 6, "UDP": 17, "SCTP": 132}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}

SCOPE_EXTERNAL = 0
SCOPE_INTERNAL = 1

# lb4_service.flags (Cilium's enum svc_flags)
SVC_FLAG_EXTERNAL_IP = 1 << 0
SVC_FLAG_NODEPORT = 1 << 1
SVC_FLAG_EXT_LOCAL_SCOPE = 1 << 2
SVC_FLAG_HOSTPORT = 1 << 3
SVC_FLAG_AFFINITY = 1 << 4
SVC_FLAG_LOADBALANCER = 1 << 5
SVC_FLAG_ROUTABLE = 1 << 6
SVC_FLAG_SOURCE_RANGE = 1 << 7
# lb4_service.flags2
SVC_FLAG2_INT_LOCAL_SCOPE = 1 << 4
SVC_FLAG2_TWO_SCOPES = 1 << 5
SVC_FLAG2_REJECT = 1 << 6
"""pylium's: no backends at all -> answer with a reject (ICMP port unreachable / TCP RST), as
kube-proxy does; count 0 without this flag (an empty Local frontend) drops."""

LB_ALGORITHMS = {None: 0, "random": 1, "maglev": 2}
LB_ALGORITHMS_NAMES = {0: "undef", 1: "random", 2: "maglev"}
AFFINITY_TIMEOUT_MASK = (1 << 24) - 1

BE_STATES = {BackendState.ACTIVE: 0, BackendState.TERMINATING: 1, BackendState.QUARANTINED: 2}
BE_STATE_NAMES = {v: k for k, v in BE_STATES.items()}

SERVICE_KEY = struct.Struct("=4sHHBB2x")
SERVICE_VALUE = struct.Struct("=IHHBBH")
BACKEND_KEY = struct.Struct("=I")
BACKEND_VALUE = struct.Struct("=4sHBBHBx")
REVNAT_KEY = struct.Struct("=H")
REVNAT_VALUE = struct.Struct("=4sH2x")
AFFINITY_MATCH_KEY = struct.Struct("=IH2x")
MAGLEV_KEY = struct.Struct("=H")

_BE16 = struct.Struct("!H")


def _be16(value: int) -> int:
    """A port as the native-order u16 whose bytes are the port in network order."""
    (native,) = struct.unpack("=H", _BE16.pack(value))
    return int(native)


@dataclass(frozen=True, order=True)
class ServiceKey:
    """A services-map key."""

    address: L4Addr
    slot: int
    scope: int = SCOPE_EXTERNAL

    def encode(self) -> bytes:
        """The 12 key bytes."""
        a = self.address
        return SERVICE_KEY.pack(
            a.address.packed, _be16(a.port), self.slot, PROTOCOLS[a.protocol], self.scope
        )

    @classmethod
    def decode(cls, data: bytes) -> ServiceKey:
        """Parse 12 key bytes."""
        ip, port, slot, proto, scope = SERVICE_KEY.unpack(data)
        addr = L4Addr(IPv4Address(ip), _be16(port), PROTOCOL_NAMES[proto])
        return cls(addr, slot, scope)


@dataclass(frozen=True)
class ServiceValue:
    """A services-map value; slot 0 carries the service, other slots a backend id."""

    backend_id: int
    count: int
    rev_nat_index: int
    flags: int
    flags2: int
    qcount: int

    def encode(self) -> bytes:
        """The 12 value bytes."""
        return SERVICE_VALUE.pack(
            self.backend_id, self.count, self.rev_nat_index, self.flags, self.flags2, self.qcount
        )

    @classmethod
    def decode(cls, data: bytes) -> ServiceValue:
        """Parse 12 value bytes."""
        return cls(*SERVICE_VALUE.unpack(data))


def master_word(affinity_timeout: int, algorithm: str | None) -> int:
    """Slot 0's first word: affinity timeout | algorithm << 24."""
    return (affinity_timeout & AFFINITY_TIMEOUT_MASK) | LB_ALGORITHMS[algorithm] << 24


def encode_backend(backend_id: int, address: L4Addr, state: BackendState) -> tuple[bytes, bytes]:
    """A backends-map entry."""
    value = BACKEND_VALUE.pack(
        address.address.packed, _be16(address.port), PROTOCOLS[address.protocol],
        BE_STATES[state], 0, 0,
    )  # fmt: skip
    return BACKEND_KEY.pack(backend_id), value


def decode_backend(key: bytes, value: bytes) -> tuple[int, L4Addr, BackendState]:
    """Parse a backends-map entry."""
    (backend_id,) = BACKEND_KEY.unpack(key)
    ip, port, proto, state, _, _ = BACKEND_VALUE.unpack(value)
    addr = L4Addr(IPv4Address(ip), _be16(port), PROTOCOL_NAMES[proto])
    return backend_id, addr, BE_STATE_NAMES[state]


def encode_revnat(rev_nat_index: int, address: IPv4Address, port: int) -> tuple[bytes, bytes]:
    """A reverse-NAT entry."""
    return REVNAT_KEY.pack(rev_nat_index), REVNAT_VALUE.pack(address.packed, _be16(port))


def encode_affinity_match(backend_id: int, rev_nat_index: int) -> tuple[bytes, bytes]:
    """An affinity-match entry."""
    return AFFINITY_MATCH_KEY.pack(backend_id, rev_nat_index), b"\x00"


def encode_maglev(rev_nat_index: int, table: tuple[int, ...]) -> tuple[bytes, bytes]:
    """A Maglev outer key and the inner array's single value (M backend ids)."""
    return MAGLEV_KEY.pack(rev_nat_index), struct.pack(f"={len(table)}I", *table)
