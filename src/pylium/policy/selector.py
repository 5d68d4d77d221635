"""Selectors over identities: label selectors (Kubernetes and Cilium shapes) and CIDR selectors.

A selector is a frozen, hashable value, so the selector cache keys on it and two policies that
select the same peers share one cache entry. Label keys are source-qualified: `k8s:pod`
matches only `k8s` labels, `any:pod` matches the key under any source (Cilium's default for
keys written without a source).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from pylium.identity.labels import (
    NAMESPACE_LABELS_PREFIX,
    POD_NAMESPACE_LABEL,
    SOURCE_CIDR,
    SOURCE_K8S,
    Label,
    Labels,
)
from pylium.identity.numeric import (
    IDENTITY_UNKNOWN,
    IDENTITY_WORLD,
    IDENTITY_WORLD_IPV4,
    IDENTITY_WORLD_IPV6,
    LOCAL_IDENTITY_FLAG,
)

SOURCE_ANY = "any"
OUTSIDE_IDENTITIES = frozenset(
    [IDENTITY_UNKNOWN, IDENTITY_WORLD, IDENTITY_WORLD_IPV4, IDENTITY_WORLD_IPV6]
)
IN_CLUSTER_KEY = "in-cluster"
"""Key of the `cidr:` label marking the CIDR class for in-cluster peers (`cidr_class_labels`)."""

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address


@dataclass(frozen=True, order=True)
class Requirement:
    """`key operator values`; `key` is `source:name`."""

    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: frozenset[str] = frozenset()

    def matches(self, labels: Labels) -> bool:
        """Whether the labels satisfy the requirement (NotIn holds when the key is absent)."""
        source, _, name = self.key.partition(":")
        found = [
            label.value
            for label in labels
            if label.key == name and source in (SOURCE_ANY, label.source)
        ]
        if self.operator == "In":
            return any(v in self.values for v in found)
        if self.operator == "NotIn":
            return not any(v in self.values for v in found)
        if self.operator == "Exists":
            return bool(found)
        return not found

    def __str__(self) -> str:
        if self.operator in ("Exists", "DoesNotExist"):
            return f"{'!' if self.operator == 'DoesNotExist' else ''}{self.key}"
        if self.operator == "In" and len(self.values) == 1:
            return f"{self.key}={next(iter(self.values))}"
        op = "in" if self.operator == "In" else "notin"
        return f"{self.key} {op} ({','.join(sorted(self.values))})"


@dataclass(frozen=True)
class LabelSelector:
    """All requirements must hold; no requirement selects every identity."""

    requirements: frozenset[Requirement] = frozenset()

    def matches(self, labels: Labels) -> bool:
        """Whether an identity with these labels is selected."""
        return all(r.matches(labels) for r in self.requirements)

    @property
    def is_wildcard(self) -> bool:
        """Selects every identity (the policy map's identity 0)."""
        return not self.requirements

    def __str__(self) -> str:
        return "{" + ", ".join(str(r) for r in sorted(self.requirements)) + "}"


@dataclass(frozen=True)
class CIDRSelector:
    """Identities of addresses inside `prefix`: the CIDR classes (`cidr:` labels) of rule
    prefixes within it. Addresses are not identities here: the datapath finds a peer's CIDR
    class from its address (bpf/lib/policy.h), so a pod matches by address through its class,
    never through its identity (which other pods, outside the prefix, may share)."""

    prefix: Network
    world: bool = False
    """The prefix covers the whole address space: it also selects `reserved:world`."""
    pods: bool = False
    """Also select in-cluster classes (pods, the host, remote nodes by address): Kubernetes
    ipBlock does; Cilium's own CIDR rules are for peers that are not endpoints, so theirs do
    not."""

    def matches(self, labels: Labels) -> bool:
        """Whether the identity is a CIDR class of a prefix within this one (an in-cluster
        class only for a selector with `pods`), or world for a selector of everything."""
        nets = [label.key for label in labels if label.source == SOURCE_CIDR]
        if nets:
            if IN_CLUSTER_KEY in nets and not self.pods:
                return False
            net = ipaddress.ip_network(next(n for n in nets if n != IN_CLUSTER_KEY), strict=False)
            return net.version == self.prefix.version and net.subnet_of(self.prefix)  # type: ignore[arg-type]
        return self.world and any(
            label.source == "reserved" and label.key.startswith("world") for label in labels
        )

    @property
    def is_wildcard(self) -> bool:
        """Never: a CIDR selects identities one by one."""
        return False

    def __str__(self) -> str:
        return f"cidr:{self.prefix}"


Selector = LabelSelector | CIDRSelector


def requirements_from(
    selector: Mapping[str, Any] | None, *, default_source: str, key_prefix: str = ""
) -> frozenset[Requirement]:
    """Requirements of a `{matchLabels, matchExpressions}` selector.

    Args:
        selector: the selector as stored (None = select all).
        default_source: the source of keys that name none (`k8s` for Kubernetes selectors,
            `any` for Cilium's).
        key_prefix: put before each key (namespace selectors match the pod's
            `io.cilium.k8s.namespace.labels.<key>` labels).
    """
    selector = selector or {}

    def key(k: str) -> str:
        source, sep, name = k.partition(":")
        if not sep or default_source == SOURCE_K8S:
            source, name = default_source, k
        return f"{source}:{key_prefix}{name}"

    out = [
        Requirement(key(k), "In", frozenset([v]))
        for k, v in (selector.get("matchLabels") or {}).items()
    ]
    out += [
        Requirement(key(e["key"]), e["operator"], frozenset(e.get("values") or ()))
        for e in selector.get("matchExpressions") or []
    ]
    return frozenset(out)


def in_namespace(namespace: str) -> Requirement:
    """Pods of one namespace."""
    return Requirement(f"{SOURCE_K8S}:{POD_NAMESPACE_LABEL}", "In", frozenset([namespace]))


def any_pod() -> Requirement:
    """Every pod (identities with a namespace), not reserved or CIDR identities."""
    return Requirement(f"{SOURCE_K8S}:{POD_NAMESPACE_LABEL}", "Exists")


def namespace_selector(selector: Mapping[str, Any] | None) -> frozenset[Requirement]:
    """A Kubernetes namespaceSelector as requirements on the pod's namespace labels."""
    reqs = requirements_from(
        selector, default_source=SOURCE_K8S, key_prefix=NAMESPACE_LABELS_PREFIX
    )
    return reqs | {any_pod()}


def names_namespace(reqs: frozenset[Requirement]) -> bool:
    """Whether a Cilium selector already says which namespace (then a CNP does not add its
    own namespace)."""
    return any(r.key.partition(":")[2] == POD_NAMESPACE_LABEL for r in reqs)


def cidr_selectors(
    cidr: str, excepts: list[str] | None = None, *, pods: bool = False
) -> list[CIDRSelector]:
    """The prefixes of `cidr` minus its `except` carve-outs, one selector each (`pods`: also
    select the in-cluster classes, which match pods by address)."""
    base = ipaddress.ip_network(cidr, strict=False)
    parts: list[Network] = [base]
    for text in excepts or []:
        cut = ipaddress.ip_network(text, strict=False)
        next_parts: list[Network] = []
        for part in parts:
            if part.version == cut.version and cut.subnet_of(part):  # type: ignore[arg-type]
                next_parts.extend(part.address_exclude(cut))  # type: ignore[arg-type]
            elif not (part.version == cut.version and part.subnet_of(cut)):  # type: ignore[arg-type]
                next_parts.append(part)
        parts = next_parts
    return [CIDRSelector(p, p.prefixlen == 0, pods) for p in sorted(parts, key=_net_key)]


def cidr_class_labels(prefix: Network) -> tuple[Labels, Labels]:
    """The label sets of a prefix's two CIDR classes (bpf/lib/policy.h): for a peer outside
    the cluster, selected by every CIDR selector whose prefix holds it; and for a peer with an
    in-cluster identity, selected only by selectors with `pods` (Kubernetes ipBlock)."""
    label = Label(SOURCE_CIDR, str(prefix))
    return Labels([label]), Labels([label, Label(SOURCE_CIDR, IN_CLUSTER_KEY)])


def is_outside(identity: int) -> bool:
    """Whether a peer identity is outside the cluster (world, unknown, node-local CIDR): its
    address uses the outside CIDR class."""
    return identity in OUTSIDE_IDENTITIES or bool(identity & LOCAL_IDENTITY_FLAG)


def _net_key(net: Network) -> tuple[int, int, int]:
    return (net.version, int(net.network_address), net.prefixlen)
