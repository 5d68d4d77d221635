"""Security identities: labels -> a numeric identity every node agrees on (DESIGN §3).

- `labels`: Cilium's `source:key=value` labels and the labels of a pod.
- `filter`: which labels are identity-relevant (Cilium's default label prefix rules).
- `numeric`: reserved ids (1 host, 2 world, 6 remote-node, ...), scopes and ranges.
- `allocator`: cluster-wide allocation through CiliumIdentity objects in the store.
"""

from __future__ import annotations

from pylium.identity.allocator import AllocatorParams, IdentityAllocator, IdentityExhausted
from pylium.identity.filter import DEFAULT_RULES, LabelFilter
from pylium.identity.labels import Label, Labels, pod_labels
from pylium.identity.model import Identity, identity_from_object, identity_object
from pylium.identity.numeric import (
    IDENTITY_HOST,
    IDENTITY_INIT,
    IDENTITY_REMOTE_NODE,
    IDENTITY_UNKNOWN,
    IDENTITY_WORLD,
    MAX_CLUSTER_IDENTITY,
    MIN_CLUSTER_IDENTITY,
    RESERVED_NAMES,
    Scope,
    identity_name,
    reserved_identity,
    reserved_labels,
    scope_of,
)

__all__ = [
    "DEFAULT_RULES",
    "IDENTITY_HOST",
    "IDENTITY_INIT",
    "IDENTITY_REMOTE_NODE",
    "IDENTITY_UNKNOWN",
    "IDENTITY_WORLD",
    "MAX_CLUSTER_IDENTITY",
    "MIN_CLUSTER_IDENTITY",
    "RESERVED_NAMES",
    "AllocatorParams",
    "Identity",
    "IdentityAllocator",
    "IdentityExhausted",
    "Label",
    "LabelFilter",
    "Labels",
    "Scope",
    "identity_from_object",
    "identity_name",
    "identity_object",
    "pod_labels",
    "reserved_identity",
    "reserved_labels",
    "scope_of",
]
