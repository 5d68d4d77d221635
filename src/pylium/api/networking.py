"""networking.k8s.io/v1 NetworkPolicy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pylium.api.core import Resource
from pylium.api.errors import FieldIssue
from pylium.api.fields import CIDR, IntOrPortName, Model, Port, Protocol
from pylium.api.meta import LabelSelector


class IPBlock(Model):
    """A CIDR with optional carve-outs."""

    cidr: CIDR
    except_: list[CIDR] | None = Field(default=None, alias="except")


class NetworkPolicyPeer(Model):
    """Pods (by pod and/or namespace selector) or an IP block."""

    podSelector: LabelSelector | None = None
    namespaceSelector: LabelSelector | None = None
    ipBlock: IPBlock | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> NetworkPolicyPeer:
        selectors = self.podSelector is not None or self.namespaceSelector is not None
        if self.ipBlock is not None and selectors:
            raise FieldIssue(
                "Forbidden: may not be specified with podSelector or namespaceSelector",
                ("ipBlock",),
            )
        if self.ipBlock is None and not selectors:
            raise FieldIssue("Required value: must specify a peer")
        return self


class NetworkPolicyPort(Model):
    """A port (number or name) or a range of numbers up to endPort."""

    protocol: Protocol = "TCP"
    port: IntOrPortName | None = None
    endPort: Port | None = None

    @model_validator(mode="after")
    def _range(self) -> NetworkPolicyPort:
        if self.endPort is not None:
            if not isinstance(self.port, int):
                raise FieldIssue("Forbidden: may only be used with a numeric port", ("endPort",))
            if self.endPort < self.port:
                raise FieldIssue(
                    "Invalid value: must be greater than or equal to `port`", ("endPort",)
                )
        return self


class NetworkPolicyIngressRule(Model):
    """Traffic allowed in: from any of the peers (all when absent) to any of the ports."""

    from_: list[NetworkPolicyPeer] | None = Field(default=None, alias="from")
    ports: list[NetworkPolicyPort] | None = None


class NetworkPolicyEgressRule(Model):
    """Traffic allowed out: to any of the peers (all when absent) on any of the ports."""

    to: list[NetworkPolicyPeer] | None = None
    ports: list[NetworkPolicyPort] | None = None


class NetworkPolicySpec(Model):
    """Which pods the policy isolates and what it allows."""

    podSelector: LabelSelector
    policyTypes: list[Literal["Ingress", "Egress"]] | None = None
    ingress: list[NetworkPolicyIngressRule] | None = None
    egress: list[NetworkPolicyEgressRule] | None = None


class NetworkPolicy(Resource):
    """networking.k8s.io/v1 NetworkPolicy."""

    spec: NetworkPolicySpec
