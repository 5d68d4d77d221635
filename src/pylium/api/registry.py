"""The kind registry: apiVersion + kind -> model, scope, and the names `pylium get` accepts."""

from __future__ import annotations

from dataclasses import dataclass

from pylium.api.cilium import CiliumIdentity, CiliumLoadBalancerIPPool, CiliumNode
from pylium.api.ciliumpolicy import CiliumClusterwideNetworkPolicy, CiliumNetworkPolicy
from pylium.api.core import Namespace, Node, Pod, Resource, Service
from pylium.api.discovery import EndpointSlice
from pylium.api.errors import UnknownKind
from pylium.api.networking import NetworkPolicy


@dataclass(frozen=True)
class KindInfo:
    """One registered kind."""

    api_version: str
    kind: str
    plural: str
    short_names: tuple[str, ...]
    namespaced: bool
    model: type[Resource]

    @property
    def names(self) -> tuple[str, ...]:
        """Every name that resolves to this kind: plural, singular, short names, and the
        group-qualified plural (`ciliumnodes.cilium.io`)."""
        group = self.api_version.rpartition("/")[0]
        qualified = (f"{self.plural}.{group}",) if group else ()
        return (self.plural, self.kind.lower(), *self.short_names, *qualified)


KINDS: tuple[KindInfo, ...] = (
    KindInfo("v1", "Namespace", "namespaces", ("ns",), False, Namespace),
    KindInfo("v1", "Pod", "pods", ("po",), True, Pod),
    KindInfo("v1", "Service", "services", ("svc",), True, Service),
    KindInfo("v1", "Node", "nodes", ("no",), False, Node),
    KindInfo(
        "discovery.k8s.io/v1", "EndpointSlice", "endpointslices", ("eps",), True, EndpointSlice
    ),
    KindInfo(
        "networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", ("netpol",), True, NetworkPolicy
    ),
    KindInfo("cilium.io/v2", "CiliumNode", "ciliumnodes", ("cn",), False, CiliumNode),
    KindInfo(
        "cilium.io/v2",
        "CiliumIdentity",
        "ciliumidentities",
        ("ciliumid", "identities", "identity"),
        False,
        CiliumIdentity,
    ),
    KindInfo(
        "cilium.io/v2",
        "CiliumNetworkPolicy",
        "ciliumnetworkpolicies",
        ("cnp", "ciliumnp"),
        True,
        CiliumNetworkPolicy,
    ),
    KindInfo(
        "cilium.io/v2",
        "CiliumClusterwideNetworkPolicy",
        "ciliumclusterwidenetworkpolicies",
        ("ccnp",),
        False,
        CiliumClusterwideNetworkPolicy,
    ),
    KindInfo(
        "cilium.io/v2alpha1",
        "CiliumLoadBalancerIPPool",
        "ciliumloadbalancerippools",
        ("ippools", "ippool", "lbippool"),
        False,
        CiliumLoadBalancerIPPool,
    ),
)

_BY_TYPE = {(k.api_version, k.kind): k for k in KINDS}
_BY_KIND = {k.kind: k for k in KINDS}
_BY_NAME = {name: k for k in KINDS for name in k.names}


def kind_for(api_version: str, kind: str) -> KindInfo:
    """The registered kind of an object; UnknownKind if there is none."""
    info = _BY_TYPE.get((api_version, kind))
    if info is None:
        raise UnknownKind(f'no matches for kind "{kind}" in version "{api_version}"')
    return info


def kind_named(kind: str) -> KindInfo:
    """The registered kind with that `kind` (as the store keys objects); UnknownKind if none."""
    info = _BY_KIND.get(kind)
    if info is None:
        raise UnknownKind(f'unknown kind "{kind}"')
    return info


def resolve_resource(name: str) -> KindInfo:
    """The kind a `get`/`delete` argument names (`pods`, `po`, `pod`, `Pod`, `svc`, ...)."""
    info = _BY_NAME.get(name.lower())
    if info is None:
        raise UnknownKind(f'the server doesn\'t have a resource type "{name}"')
    return info
