"""discovery.k8s.io/v1 EndpointSlice: the addresses behind a Service, written by the
EndpointSlice controller (`pylium.operator.endpointslices`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from pylium.api.core import Resource
from pylium.api.errors import FieldIssue
from pylium.api.fields import DNSSubdomain, IPAddress, Model, Port, PortName, Protocol

MAX_ENDPOINTS = 1000
"""Kubernetes' limit of endpoints per slice (the controller writes at most 100)."""
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
"""The label tying a slice to its Service."""
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
"""The label naming the controller that owns a slice."""


class EndpointConditions(Model):
    """ready: take new connections; serving: answering (even while terminating);
    terminating: the pod is being deleted. Absent ready/serving mean true, absent
    terminating means false (the API's documented defaults)."""

    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


class ObjectReference(Model):
    """The pod behind an endpoint."""

    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None


class Endpoint(Model):
    """One backend: its address (exactly one for IPv4 slices), conditions and node."""

    addresses: Annotated[list[IPAddress], Field(min_length=1, max_length=100)]
    conditions: EndpointConditions | None = None
    nodeName: DNSSubdomain | None = None
    hostname: str | None = None
    zone: str | None = None
    targetRef: ObjectReference | None = None


class EndpointPort(Model):
    """A port every endpoint of the slice serves; `name` matches the Service port's name."""

    name: PortName | Literal[""] | None = None
    protocol: Protocol = "TCP"
    port: Port | None = None
    appProtocol: str | None = None


class EndpointSlice(Resource):
    """discovery.k8s.io/v1 EndpointSlice (no `spec`: the fields sit at the top level)."""

    addressType: Literal["IPv4", "IPv6", "FQDN"]
    endpoints: Annotated[list[Endpoint], Field(max_length=MAX_ENDPOINTS)] | None = None
    ports: list[EndpointPort] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> EndpointSlice:
        for i, ep in enumerate(self.endpoints or []):
            for j, address in enumerate(ep.addresses):
                if self.addressType == "IPv4" and ":" in address:
                    raise FieldIssue(
                        f'Invalid value: "{address}": must be a valid IPv4 address',
                        ("endpoints", i, "addresses", j),
                    )
        seen: set[str] = set()
        for i, port in enumerate(self.ports or []):
            name = port.name or ""
            if name in seen:
                raise FieldIssue(f'Duplicate value: "{name}"', ("ports", i, "name"))
            seen.add(name)
        return self
