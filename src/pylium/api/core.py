"""Core (v1) kinds: Namespace, Pod, Service, Node. Shapes follow the Kubernetes API; only the
fields pylium reads are described, everything else passes through unchecked."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field, model_validator

from pylium.api.errors import FieldIssue
from pylium.api.fields import (
    CIDR,
    DNSLabel,
    DNSSubdomain,
    IntOrPortName,
    IPAddress,
    Labels,
    Model,
    Port,
    PortName,
    Protocol,
)
from pylium.api.meta import LabelNameMeta, ObjectMeta


def _unique(values: Sequence[object | None], what: str, field: str) -> None:
    """Raise FieldIssue at `what[i].field` for the first repeated non-empty value."""
    seen: set[object] = set()
    for i, value in enumerate(values):
        if value is None:
            continue
        if value in seen:
            shown = "/".join(map(str, value)) if isinstance(value, tuple) else value
            raise FieldIssue(f'Duplicate value: "{shown}"', (what, i, field))
        seen.add(value)


class Resource(Model):
    """Fields every object has."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta


class Namespace(Resource):
    """v1 Namespace."""

    metadata: LabelNameMeta


class ContainerPort(Model):
    """A port a container listens on; the lab's built-in server answers on each."""

    containerPort: Port
    protocol: Protocol = "TCP"
    name: PortName | None = None
    hostPort: Port | None = None


class Container(Model):
    """A container: the lab runs `command` + `args`, or its built-in server."""

    name: DNSLabel
    image: Annotated[str, Field(min_length=1)]
    command: list[str] | None = None
    args: list[str] | None = None
    ports: list[ContainerPort] | None = None

    @model_validator(mode="after")
    def _unique_ports(self) -> Container:
        ports = self.ports or []
        _unique([p.name for p in ports], "ports", "name")
        _unique([(p.containerPort, p.protocol) for p in ports], "ports", "containerPort")
        return self


class PodSpec(Model):
    """What a pod runs and where."""

    containers: Annotated[list[Container], Field(min_length=1)]
    nodeName: DNSSubdomain | None = None

    @model_validator(mode="after")
    def _unique_containers(self) -> PodSpec:
        _unique([c.name for c in self.containers], "containers", "name")
        return self


class PodIP(Model):
    """One entry of status.podIPs."""

    ip: IPAddress


class PodStatus(Model):
    """Written by the kubelet (the lab kubelet here)."""

    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"] | None = None
    podIP: IPAddress | None = None
    podIPs: list[PodIP] | None = None
    hostIP: IPAddress | None = None


class Pod(Resource):
    """v1 Pod."""

    spec: PodSpec
    status: PodStatus | None = None


class ServicePort(Model):
    """A port a service exposes and the pod port it forwards to (a number or a port name
    resolved per pod)."""

    name: DNSLabel | None = None
    protocol: Protocol = "TCP"
    port: Port
    targetPort: IntOrPortName | None = None
    nodePort: Port | None = None


class ClientIPConfig(Model):
    """sessionAffinityConfig.clientIP: how long a client sticks to its backend."""

    timeoutSeconds: int | None = None

    @model_validator(mode="after")
    def _timeout_in_range(self) -> ClientIPConfig:
        t = self.timeoutSeconds
        if t is not None and not 0 < t <= MAX_AFFINITY_TIMEOUT:
            raise FieldIssue(
                f"Invalid value: {t}: must be greater than 0 and less than {MAX_AFFINITY_TIMEOUT}",
                ("timeoutSeconds",),
            )
        return self


class SessionAffinityConfig(Model):
    """Settings of sessionAffinity: ClientIP."""

    clientIP: ClientIPConfig | None = None


MAX_AFFINITY_TIMEOUT = 86400
"""Kubernetes' upper bound of sessionAffinityConfig.clientIP.timeoutSeconds."""
DEFAULT_AFFINITY_TIMEOUT = 10800
"""Kubernetes' default affinity timeout (3 h)."""

TrafficPolicy = Literal["Cluster", "Local"]


class ServiceSpec(Model):
    """How a service selects pods and which ports it exposes."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = "ClusterIP"
    selector: Labels | None = None
    clusterIP: str | None = None
    clusterIPs: list[str] | None = None
    ports: list[ServicePort] | None = None
    externalName: str | None = None
    externalIPs: list[IPAddress] | None = None
    loadBalancerIP: IPAddress | None = None
    sessionAffinity: Literal["None", "ClientIP"] | None = None
    sessionAffinityConfig: SessionAffinityConfig | None = None
    externalTrafficPolicy: TrafficPolicy | None = None
    internalTrafficPolicy: TrafficPolicy | None = None
    ipFamilies: list[Literal["IPv4"]] | None = None
    ipFamilyPolicy: Literal["SingleStack"] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSpec:
        for i, ip in enumerate([self.clusterIP, *(self.clusterIPs or [])]):
            if ip not in (None, "", "None"):
                try:
                    ipaddress.ip_address(ip)
                except ValueError:
                    field: tuple[str | int, ...] = (
                        ("clusterIP",) if i == 0 else ("clusterIPs", i - 1)
                    )
                    raise FieldIssue(
                        f'Invalid value: "{ip}": must be a valid IP address, "None" or empty', field
                    ) from None
        if self.clusterIP and self.clusterIPs and self.clusterIPs[0] != self.clusterIP:
            raise FieldIssue(
                f'Invalid value: "{self.clusterIPs[0]}": must match `clusterIP` when both are set',
                ("clusterIPs", 0),
            )
        ports = self.ports or []
        if self.type == "ExternalName":
            if not self.externalName:
                raise FieldIssue("Required value", ("externalName",))
        elif not ports and self.clusterIP != "None":
            raise FieldIssue("Required value", ("ports",))
        if self.clusterIP == "None" and self.type in ("NodePort", "LoadBalancer"):
            raise FieldIssue(
                f"Invalid value: \"None\": may not be set to 'None' for {self.type} services",
                ("clusterIP",),
            )
        if len(ports) > 1:
            for i, p in enumerate(ports):
                if not p.name:
                    raise FieldIssue(
                        "Required value: name is required with several ports", ("ports", i, "name")
                    )
        _unique([p.name for p in ports], "ports", "name")
        _unique([(p.port, p.protocol) for p in ports], "ports", "port")
        _unique(
            [(p.nodePort, p.protocol) if p.nodePort else None for p in ports], "ports", "nodePort"
        )
        external = self.externalIPs or []
        for i, ip in enumerate(external):
            if ip in external[:i]:
                raise FieldIssue(f'Duplicate value: "{ip}"', ("externalIPs", i))
        if self.type not in ("NodePort", "LoadBalancer"):
            for i, p in enumerate(ports):
                if p.nodePort is not None:
                    raise FieldIssue(
                        f"Forbidden: may not be used when `type` is '{self.type}'",
                        ("ports", i, "nodePort"),
                    )
            if self.externalTrafficPolicy is not None and not self.externalIPs:
                raise FieldIssue(
                    "Invalid value: may only be set for externally-accessible services",
                    ("externalTrafficPolicy",),
                )
        if self.sessionAffinityConfig is not None and self.sessionAffinity != "ClientIP":
            raise FieldIssue(
                "Forbidden: must not be set when `sessionAffinity` is not 'ClientIP'",
                ("sessionAffinityConfig",),
            )
        return self


class LoadBalancerIngress(Model):
    """One address the load balancer answers on."""

    ip: IPAddress | None = None
    hostname: str | None = None


class LoadBalancerStatus(Model):
    """status.loadBalancer, written by LB-IPAM."""

    ingress: list[LoadBalancerIngress] | None = None


class ServiceStatus(Model):
    """What controllers report about a service."""

    loadBalancer: LoadBalancerStatus | None = None


class Service(Resource):
    """v1 Service."""

    metadata: LabelNameMeta
    spec: ServiceSpec
    status: ServiceStatus | None = None


class NodeAddress(Model):
    """One entry of status.addresses."""

    type: str
    address: str


class NodeSpec(Model):
    """A node's pod CIDRs (pylium keeps the authoritative ones in its CiliumNode)."""

    podCIDR: CIDR | None = None
    podCIDRs: list[CIDR] | None = None
    unschedulable: bool | None = None


class NodeStatus(Model):
    """Addresses and conditions the node reports."""

    addresses: list[NodeAddress] | None = None


class Node(Resource):
    """v1 Node."""

    spec: NodeSpec | None = None
    status: NodeStatus | None = None
