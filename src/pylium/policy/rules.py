"""The engine's own rule form, and the translation of NetworkPolicy, CiliumNetworkPolicy and
CiliumClusterwideNetworkPolicy objects into it.

One `Rule` is one ingress/egress (allow or deny) item of one policy: a subject selector (the
endpoints it applies to), the peers it matches and the ports. A policy that selects endpoints
for a direction without allowing anything (`policyTypes: [Ingress]` and no ingress rules,
Cilium's `ingress: [{}]`) becomes a rule with no peers: it isolates and matches nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pylium.api.ciliumpolicy import ICMP_TYPES
from pylium.identity.labels import CLUSTER_LABEL, SOURCE_K8S, SOURCE_RESERVED
from pylium.policy.selector import (
    SOURCE_ANY,
    LabelSelector,
    Requirement,
    Selector,
    cidr_selectors,
    in_namespace,
    names_namespace,
    namespace_selector,
    requirements_from,
)

KINDS = ("NetworkPolicy", "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy")
"""The policy kinds the engine reads from the store."""

PROTOCOLS = {"ICMP": 1, "TCP": 6, "UDP": 17, "ICMPv6": 58, "SCTP": 132}
"""IP protocol numbers; 0 in a policy key means any protocol."""
L4_ANY = ("TCP", "UDP", "SCTP")
"""What Cilium's `protocol: ANY` expands to."""


class Direction(Enum):
    """Traffic direction, seen from the subject endpoint."""

    INGRESS = "ingress"
    EGRESS = "egress"


@dataclass(frozen=True, order=True)
class PolicyRef:
    """Which stored policy a rule came from."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        short = {"NetworkPolicy": "netpol", "CiliumNetworkPolicy": "cnp"}.get(self.kind, "ccnp")
        return f"{short}:{self.namespace}/{self.name}" if self.namespace else f"{short}:{self.name}"


@dataclass(frozen=True)
class PortMatch:
    """A protocol and a port range, or a named port (resolved per endpoint)."""

    protocol: str
    """TCP, UDP, SCTP, ICMP, ICMPv6, or ANY (every protocol, every port)."""
    port: int = 0
    """0 = every port (for ICMP: the ICMP type)."""
    end_port: int = 0
    name: str = ""


ANY_PORT = PortMatch("ANY")


@dataclass(frozen=True)
class Rule:
    """One ingress/egress rule of one policy."""

    ref: PolicyRef
    where: str
    """Its place in the policy, e.g. `spec.ingress[0]` (named in traces)."""
    subject: Selector
    direction: Direction
    deny: bool
    peers: tuple[Selector, ...]
    """Selectors of the peers; a wildcard selector means every identity."""
    ports: tuple[PortMatch, ...]
    isolates: bool
    """Selecting an endpoint puts this direction into default deny."""

    @property
    def label(self) -> str:
        """`netpol:x/base spec.ingress[0]`: how traces and verdict events name the rule."""
        return f"{self.ref} {self.where}"


WILDCARD = LabelSelector()


def rules_of(obj: Mapping[str, Any]) -> list[Rule]:
    """The rules of a validated policy object."""
    ref = policy_ref(obj)
    if ref.kind == "NetworkPolicy":
        return _k8s_rules(ref, obj["spec"])
    specs = ([("spec", obj["spec"])] if obj.get("spec") else []) + [
        (f"specs[{i}]", s) for i, s in enumerate(obj.get("specs") or [])
    ]
    return [rule for where, spec in specs for rule in _cilium_rules(ref, where, spec)]


def policy_ref(obj: Mapping[str, Any]) -> PolicyRef:
    """The reference of a policy object (no namespace for the cluster-wide kind)."""
    meta = obj["metadata"]
    namespaced = obj["kind"] != "CiliumClusterwideNetworkPolicy"
    namespace = (meta.get("namespace") or "") if namespaced else ""
    return PolicyRef(obj["kind"], namespace, meta["name"])


# --- Kubernetes NetworkPolicy ------------------------------------------------------------------


def _k8s_rules(ref: PolicyRef, spec: Mapping[str, Any]) -> list[Rule]:
    subject = LabelSelector(
        requirements_from(spec.get("podSelector"), default_source=SOURCE_K8S)
        | {in_namespace(ref.namespace)}
    )
    types = spec.get("policyTypes")
    if types is None:  # the API server's default: Egress only when egress rules exist
        types = ["Ingress", *(["Egress"] if spec.get("egress") else [])]
    out: list[Rule] = []
    for direction, field, peers_field in (
        (Direction.INGRESS, "ingress", "from"),
        (Direction.EGRESS, "egress", "to"),
    ):
        if direction.value.capitalize() not in types:
            continue
        items = spec.get(field) or []
        if not items:  # isolated, nothing allowed
            out.append(Rule(ref, f"spec.{field}", subject, direction, False, (), (), True))
        for i, item in enumerate(items):
            peers = item.get(peers_field) or []
            selectors = tuple(s for p in peers for s in _k8s_peer(ref.namespace, p))
            ports = tuple(_k8s_port(p) for p in item.get("ports") or []) or (ANY_PORT,)
            out.append(
                Rule(
                    ref,
                    f"spec.{field}[{i}]",
                    subject,
                    direction,
                    False,
                    selectors or (WILDCARD,),
                    ports,
                    True,
                )
            )
    return out


def _k8s_peer(namespace: str, peer: Mapping[str, Any]) -> tuple[Selector, ...]:
    block = peer.get("ipBlock")
    if block is not None:
        return tuple(cidr_selectors(block["cidr"], block.get("except"), pods=True))
    pods = requirements_from(peer.get("podSelector"), default_source=SOURCE_K8S)
    if peer.get("namespaceSelector") is not None:
        return (LabelSelector(pods | namespace_selector(peer["namespaceSelector"])),)
    return (LabelSelector(pods | {in_namespace(namespace)}),)


def _k8s_port(port: Mapping[str, Any]) -> PortMatch:
    protocol = port.get("protocol") or "TCP"
    number = port.get("port")
    if isinstance(number, str):
        return PortMatch(protocol, name=number)
    return PortMatch(protocol, number or 0, port.get("endPort") or number or 0)


# --- CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy ---------------------------------------

_RESERVED = SOURCE_RESERVED + ":"


def _reserved(name: str) -> LabelSelector:
    return LabelSelector(frozenset([Requirement(_RESERVED + name, "Exists")]))


_CLUSTER_RESERVED = (
    "host",
    "remote-node",
    "init",
    "health",
    "unmanaged",
    "kube-apiserver",
    "ingress",
)

ENTITY_SELECTORS: dict[str, tuple[LabelSelector, ...]] = {
    "all": (WILDCARD,),
    "world": (_reserved("world"), _reserved("world-ipv4"), _reserved("world-ipv6")),
    "world-ipv4": (_reserved("world-ipv4"), _reserved("world")),
    "world-ipv6": (_reserved("world-ipv6"), _reserved("world")),
    "cluster": (
        *(_reserved(n) for n in _CLUSTER_RESERVED),
        LabelSelector(frozenset([Requirement(f"{SOURCE_K8S}:{CLUSTER_LABEL}", "Exists")])),
    ),
    "none": (),
    **{n: (_reserved(n),) for n in _CLUSTER_RESERVED},
}
"""Entity -> selectors over reserved and cluster identities (Cilium's `EntitySelectorMapping`;
`cluster` = every pod of the cluster plus the reserved in-cluster identities)."""


def _cilium_rules(ref: PolicyRef, where: str, spec: Mapping[str, Any]) -> list[Rule]:
    namespaced = ref.kind == "CiliumNetworkPolicy"
    if spec.get("nodeSelector") is not None:
        subject: Selector = _reserved("host")  # host firewall: the node's own endpoint
    else:
        reqs = requirements_from(spec.get("endpointSelector"), default_source=SOURCE_ANY)
        subject = LabelSelector(reqs | ({in_namespace(ref.namespace)} if namespaced else set()))
    default_deny = spec.get("enableDefaultDeny") or {}
    out: list[Rule] = []
    for field, direction, deny, prefix in (
        ("ingress", Direction.INGRESS, False, "from"),
        ("ingressDeny", Direction.INGRESS, True, "from"),
        ("egress", Direction.EGRESS, False, "to"),
        ("egressDeny", Direction.EGRESS, True, "to"),
    ):
        isolates = default_deny.get(direction.value) is not False
        for i, item in enumerate(spec.get(field) or []):
            peers = _cilium_peers(ref, item, prefix, namespaced)
            ports = _cilium_ports(item)
            if peers is None:  # no L3 peer: all peers on the rule's ports, if it has any
                peers = (WILDCARD,) if ports else ()
            out.append(
                Rule(
                    ref,
                    f"{where}.{field}[{i}]",
                    subject,
                    direction,
                    deny,
                    peers,
                    ports or (ANY_PORT,),
                    isolates,
                )
            )
    return out


def _cilium_peers(
    ref: PolicyRef, item: Mapping[str, Any], prefix: str, namespaced: bool
) -> tuple[Selector, ...] | None:
    fields = [f"{prefix}{k}" for k in ("Endpoints", "CIDR", "CIDRSet", "Entities")]
    if all(item.get(f) is None for f in fields):
        return None
    out: list[Selector] = []
    for sel in item.get(fields[0]) or []:
        reqs = requirements_from(sel, default_source=SOURCE_ANY)
        if namespaced and not names_namespace(reqs) and not _names_reserved(reqs):
            reqs |= {in_namespace(ref.namespace)}
        out.append(LabelSelector(reqs))
    for cidr in item.get(fields[1]) or []:
        out.extend(cidr_selectors(cidr))
    for rule in item.get(fields[2]) or []:
        if rule.get("cidr"):
            out.extend(cidr_selectors(rule["cidr"], rule.get("except")))
    for entity in item.get(fields[3]) or []:
        out.extend(ENTITY_SELECTORS[entity])
    return tuple(out)


def _names_reserved(reqs: frozenset[Requirement]) -> bool:
    return any(r.key.startswith(_RESERVED) for r in reqs)


def _cilium_ports(item: Mapping[str, Any]) -> tuple[PortMatch, ...]:
    out: list[PortMatch] = []
    for port_rule in item.get("toPorts") or []:
        for p in port_rule.get("ports") or []:
            text = None if p.get("port") is None else str(p["port"])
            protocol = p.get("protocol") or "ANY"
            if text is not None and not text.isdigit():
                out.append(PortMatch(protocol, name=text))
                continue
            number = int(text or 0)
            out.append(PortMatch(protocol, number, p.get("endPort") or number))
    for icmp in item.get("icmps") or []:
        for f in icmp.get("fields") or []:
            protocol = "ICMPv6" if f.get("family") == "IPv6" else "ICMP"
            number = _icmp_type(f.get("family"), f["type"])
            out.append(PortMatch(protocol, number, number))
    return tuple(out)


def _icmp_type(family: str | None, value: int | str) -> int:
    if isinstance(value, int):
        return value
    return ICMP_TYPES[family or "IPv4"][value]
