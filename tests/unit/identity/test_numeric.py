"""Reserved identities and scopes, numbered as Cilium numbers them."""

from __future__ import annotations

from pylium.identity import (
    Labels,
    Scope,
    identity_name,
    reserved_identity,
    reserved_labels,
    scope_of,
)
from pylium.identity.numeric import (
    MAX_CLUSTER_IDENTITY,
    MIN_CLUSTER_IDENTITY,
    MIN_LOCAL_IDENTITY,
    RESERVED_NAMES,
    VNI_MASK,
)


def test_reserved_numbers_match_cilium() -> None:
    """The reserved ids are Cilium's, in its order."""
    assert RESERVED_NAMES == {
        0: "unknown",
        1: "host",
        2: "world",
        3: "unmanaged",
        4: "health",
        5: "init",
        6: "remote-node",
        7: "kube-apiserver",
        8: "ingress",
        9: "world-ipv4",
        10: "world-ipv6",
        11: "overlay-to-encrypt",
    }


def test_reserved_labels_round_trip() -> None:
    """Each reserved id's labels map back to it; kube-apiserver is also remote-node."""
    for number in range(1, 12):
        assert reserved_identity(reserved_labels(number)) == number
    assert reserved_labels(7) == Labels.of(["reserved:kube-apiserver", "reserved:remote-node"])
    assert reserved_identity(Labels.of(["reserved:host", "k8s:app=x"])) is None
    assert identity_name(6) == "remote-node"
    assert identity_name(300) == "300"


def test_ranges_and_scopes() -> None:
    """Cluster ids 256..65535 fit the 24-bit VNI; local ids carry bit 24 and never do."""
    assert (MIN_CLUSTER_IDENTITY, MAX_CLUSTER_IDENTITY) == (256, 65535)
    assert MAX_CLUSTER_IDENTITY & VNI_MASK == MAX_CLUSTER_IDENTITY
    assert MIN_LOCAL_IDENTITY == 16777217
    assert scope_of(2) is Scope.RESERVED
    assert scope_of(255) is Scope.RESERVED
    assert scope_of(256) is Scope.CLUSTER
    assert scope_of(MIN_LOCAL_IDENTITY) is Scope.LOCAL
