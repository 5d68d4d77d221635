"""Numeric security identities as Cilium numbers them (pkg/identity/numericidentity.go).

The 32-bit identity keeps its scope in the top 8 bits: 0 for reserved and cluster-wide
identities (these fit the 24-bit VXLAN VNI, so the receiving node learns the source identity
from the tunnel), 1 (`LOCAL_IDENTITY_FLAG`) for node-local CIDR/FQDN identities that never
leave the node. Reserved ids are fixed below 256; cluster-wide ids are allocated from 256 to
65535 (cluster id 0).
"""

from __future__ import annotations

from enum import Enum

from pylium.identity.labels import SOURCE_RESERVED, Label, Labels

IDENTITY_UNKNOWN = 0
IDENTITY_HOST = 1
IDENTITY_WORLD = 2
IDENTITY_UNMANAGED = 3
IDENTITY_HEALTH = 4
IDENTITY_INIT = 5
IDENTITY_REMOTE_NODE = 6
IDENTITY_KUBE_APISERVER = 7
IDENTITY_INGRESS = 8
IDENTITY_WORLD_IPV4 = 9
IDENTITY_WORLD_IPV6 = 10
IDENTITY_ENCRYPTED_OVERLAY = 11

RESERVED_NAMES: dict[int, str] = {
    IDENTITY_UNKNOWN: "unknown",
    IDENTITY_HOST: "host",
    IDENTITY_WORLD: "world",
    IDENTITY_UNMANAGED: "unmanaged",
    IDENTITY_HEALTH: "health",
    IDENTITY_INIT: "init",
    IDENTITY_REMOTE_NODE: "remote-node",
    IDENTITY_KUBE_APISERVER: "kube-apiserver",
    IDENTITY_INGRESS: "ingress",
    IDENTITY_WORLD_IPV4: "world-ipv4",
    IDENTITY_WORLD_IPV6: "world-ipv6",
    IDENTITY_ENCRYPTED_OVERLAY: "overlay-to-encrypt",
}
"""Reserved id -> the name in its `reserved:` label (Cilium's labels.IDName*)."""

USER_RESERVED_MIN = 128
"""128..255 are for user-defined reserved identities."""
MIN_CLUSTER_IDENTITY = 256
MAX_CLUSTER_IDENTITY = 65535
"""Cluster-wide ids of cluster id 0: (1 << 16) - 1 (Cilium's ClusterIDShift is 16)."""
LOCAL_IDENTITY_FLAG = 1 << 24
MIN_LOCAL_IDENTITY = LOCAL_IDENTITY_FLAG | 1
MAX_LOCAL_IDENTITY = LOCAL_IDENTITY_FLAG | 0xFFFFFF
VNI_MASK = 0xFFFFFF
"""Identities that may leave the node fit 24 bits (the VXLAN VNI)."""


class Scope(Enum):
    """Where an identity is valid."""

    RESERVED = "reserved"
    CLUSTER = "cluster"
    LOCAL = "local"


def scope_of(identity: int) -> Scope:
    """The scope of a numeric identity."""
    if identity & LOCAL_IDENTITY_FLAG:
        return Scope.LOCAL
    if identity < MIN_CLUSTER_IDENTITY:
        return Scope.RESERVED
    return Scope.CLUSTER


def reserved_labels(identity: int) -> Labels:
    """The labels of a reserved identity (`reserved:host`); kube-apiserver also carries
    `reserved:remote-node`, as in Cilium."""
    name = RESERVED_NAMES[identity]
    labels = [Label(SOURCE_RESERVED, name)]
    if identity == IDENTITY_KUBE_APISERVER:
        labels.append(Label(SOURCE_RESERVED, RESERVED_NAMES[IDENTITY_REMOTE_NODE]))
    return Labels(labels)


_RESERVED_BY_LABELS = {reserved_labels(i): i for i in RESERVED_NAMES if i != IDENTITY_UNKNOWN}


def reserved_identity(labels: Labels) -> int | None:
    """The reserved identity these labels name exactly, or None."""
    return _RESERVED_BY_LABELS.get(labels)


def identity_name(identity: int) -> str:
    """`host`, `world`, ... for reserved ids, the number otherwise."""
    return RESERVED_NAMES.get(identity, str(identity))
