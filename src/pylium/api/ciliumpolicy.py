"""cilium.io/v2 CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy (L3/L4 subset of
Cilium's `pkg/policy/api`: rule, selector, entities, cidr, l4, icmp).

Selector keys may carry a label source (`k8s:app`, `reserved:host`, `any:app`); a key without
one means `any:`, as in Cilium. L7 rules, FQDNs, services, groups, node selectors and
requirements are not enforced by pylium, so a policy using them is refused with the field
named: ignoring them would allow more than the policy says.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pylium.api.core import Resource
from pylium.api.errors import FieldIssue
from pylium.api.fields import CIDR, Model
from pylium.api.meta import LabelSelectorRequirement

Entity = Literal[  # Cilium's entities (pkg/policy/api/entity.go)
    "all",
    "world",
    "world-ipv4",
    "world-ipv6",
    "cluster",
    "host",
    "remote-node",
    "kube-apiserver",
    "ingress",
    "health",
    "init",
    "unmanaged",
    "none",
]
L4Proto = Literal["TCP", "UDP", "SCTP", "ANY"]

ICMP_TYPES: dict[str, dict[str, int]] = {
    "IPv4": {
        "EchoReply": 0,
        "DestinationUnreachable": 3,
        "Redirect": 5,
        "EchoRequest": 8,
        "TimeExceeded": 11,
        "ParameterProblem": 12,
    },
    "IPv6": {
        "DestinationUnreachable": 1,
        "PacketTooBig": 2,
        "TimeExceeded": 3,
        "ParameterProblem": 4,
        "EchoRequest": 128,
        "EchoReply": 129,
    },
}
"""ICMP type names Cilium accepts per family (numbers are accepted too)."""


class SelectorRequirement(LabelSelectorRequirement):
    """One `matchExpressions` entry of an endpoint selector: as Kubernetes', but the key may
    carry a Cilium label source (`k8s:app`, `any:app`), which a Kubernetes label key may not."""

    key: str = Field(min_length=1)


class EndpointSelector(Model):
    """A label selector over an identity's labels (`{}` selects every endpoint)."""

    matchLabels: dict[str, str] | None = None
    matchExpressions: list[SelectorRequirement] | None = None


class CIDRRule(Model):
    """A CIDR with carve-outs (`fromCIDRSet`/`toCIDRSet`)."""

    cidr: CIDR | None = None
    except_: list[CIDR] | None = Field(default=None, alias="except")
    cidrGroupRef: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> CIDRRule:
        if self.cidr is None and self.cidrGroupRef is None:
            raise FieldIssue("Required value: cidr or cidrGroupRef", ("cidr",))
        return self


class PortProtocol(Model):
    """A port (number, or a named port) or a range up to endPort, of one protocol."""

    port: int | str | None = None
    endPort: int | None = None
    protocol: L4Proto = "ANY"

    @model_validator(mode="after")
    def _valid(self) -> PortProtocol:
        text = None if self.port is None else str(self.port)
        number = int(text) if text is not None and text.isdigit() else None
        if text is not None and number is None and not text.islower():
            raise FieldIssue(f'Invalid value: "{self.port}": not a port number or name', ("port",))
        if number is not None and not 0 <= number <= 65535:
            raise FieldIssue("must be between 0 and 65535", ("port",))
        if self.endPort is not None:
            if number is None:
                raise FieldIssue("Forbidden: may only be used with a numeric port", ("endPort",))
            if not self.endPort <= 65535:
                raise FieldIssue("must be between 0 and 65535", ("endPort",))
            if self.endPort < number:
                raise FieldIssue("must be >= port", ("endPort",))
        return self


def _refuse_unenforced(model: Model, fields: tuple[str, ...]) -> None:
    """Refuse Cilium fields pylium does not enforce (naming the first one set)."""
    extra = model.model_extra or {}
    for name in fields:
        if extra.get(name):
            raise FieldIssue(
                "Forbidden: not supported by pylium (L3/L4 policy only); a rule that ignored it"
                " would allow more than it says",
                (name,),
            )


class PortRule(Model):
    """`toPorts[]`: the ports a rule allows (L7 `rules` and TLS contexts are refused)."""

    ports: list[PortProtocol] | None = None

    @model_validator(mode="after")
    def _l4_only(self) -> PortRule:
        _refuse_unenforced(
            self, ("rules", "listener", "serverNames", "originatingTLS", "terminatingTLS")
        )
        return self


class ICMPField(Model):
    """One ICMP type of one family."""

    family: Literal["IPv4", "IPv6"] = "IPv4"
    type: int | str

    @model_validator(mode="after")
    def _type(self) -> ICMPField:
        if isinstance(self.type, int) and not 0 <= self.type <= 255:
            raise FieldIssue("must be between 0 and 255", ("type",))
        if isinstance(self.type, str) and self.type not in ICMP_TYPES[self.family]:
            names = ", ".join(ICMP_TYPES[self.family])
            raise FieldIssue(
                f'Unsupported value: "{self.type}": supported values: {names}', ("type",)
            )
        return self


class ICMPRule(Model):
    """`icmps[]`."""

    fields: list[ICMPField]


class _PeerRule(Model):
    """What ingress/egress (allow or deny) rules share: ports and ICMP."""

    toPorts: list[PortRule] | None = None
    icmps: list[ICMPRule] | None = None

    @model_validator(mode="after")
    def _l4_kind(self) -> _PeerRule:
        if self.toPorts and self.icmps:
            raise FieldIssue("Forbidden: toPorts and icmps cannot be combined", ("icmps",))
        return self


class IngressRule(_PeerRule):
    """An ingress (or ingressDeny) rule: from any of the peers, on the ports."""

    fromEndpoints: list[EndpointSelector] | None = None
    fromCIDR: list[CIDR] | None = None
    fromCIDRSet: list[CIDRRule] | None = None
    fromEntities: list[Entity] | None = None

    @model_validator(mode="after")
    def _enforced_peers(self) -> IngressRule:
        _refuse_unenforced(self, ("fromRequires", "fromGroups", "fromNodes", "authentication"))
        return self


class EgressRule(_PeerRule):
    """An egress (or egressDeny) rule: to any of the peers, on the ports."""

    toEndpoints: list[EndpointSelector] | None = None
    toCIDR: list[CIDR] | None = None
    toCIDRSet: list[CIDRRule] | None = None
    toEntities: list[Entity] | None = None

    @model_validator(mode="after")
    def _enforced_peers(self) -> EgressRule:
        _refuse_unenforced(
            self,
            ("toFQDNs", "toServices", "toGroups", "toRequires", "toNodes", "authentication"),
        )
        return self


class DefaultDeny(Model):
    """`enableDefaultDeny`: whether selecting an endpoint isolates that direction."""

    ingress: bool | None = None
    egress: bool | None = None


class PolicyRule(Model):
    """One Cilium rule (a `spec` or an item of `specs`)."""

    endpointSelector: EndpointSelector | None = None
    nodeSelector: EndpointSelector | None = None
    ingress: list[IngressRule] | None = None
    ingressDeny: list[IngressRule] | None = None
    egress: list[EgressRule] | None = None
    egressDeny: list[EgressRule] | None = None
    enableDefaultDeny: DefaultDeny | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _one_subject(self) -> PolicyRule:
        if (self.endpointSelector is None) == (self.nodeSelector is None):
            raise FieldIssue(
                "Required value: exactly one of endpointSelector or nodeSelector",
                ("endpointSelector",),
            )
        return self


class CiliumNetworkPolicy(Resource):
    """cilium.io/v2 CiliumNetworkPolicy (namespaced): `spec`, `specs`, or both."""

    spec: PolicyRule | None = None
    specs: list[PolicyRule] | None = None

    @model_validator(mode="after")
    def _some_spec(self) -> CiliumNetworkPolicy:
        if self.spec is None and not self.specs:
            raise FieldIssue("Required value: spec or specs", ("spec",))
        return self


class CiliumClusterwideNetworkPolicy(CiliumNetworkPolicy):
    """cilium.io/v2 CiliumClusterwideNetworkPolicy (cluster-scoped)."""
