"""What a node knows about one Service: its ports and, per port, every endpoint with its
conditions. Frontends (BPF mode) and kube-proxy rules (iptables/nftables mode) derive from it.

Endpoint selection follows kube-proxy's `CategorizeEndpoints` (pkg/proxy/topology.go): ready
endpoints take traffic; when none is ready, serving-and-terminating ones do (graceful
termination); a `Local` traffic policy keeps only the endpoints on this node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address


@dataclass(frozen=True, order=True)
class ServiceName:
    """namespace/name of a Service."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, order=True)
class L4Addr:
    """An address, port and protocol: `10.96.0.1:80/TCP`."""

    address: IPv4Address
    port: int
    protocol: str

    def __str__(self) -> str:
        return f"{self.address}:{self.port}/{self.protocol}"


class Algorithm(StrEnum):
    """Backend selection (Cilium's `bpf-lb-algorithm`)."""

    RANDOM = "random"
    MAGLEV = "maglev"


@dataclass(frozen=True, order=True)
class Endpoint:
    """One endpoint of a service port, as the EndpointSlice says."""

    address: IPv4Address
    port: int
    node: str | None = None
    ready: bool = True
    serving: bool = True
    terminating: bool = False

    @property
    def addr_port(self) -> str:
        """`10.244.1.5:8080`, as kube-proxy names endpoints."""
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class ServicePort:
    """One port of a Service with everything a proxy needs to serve it on this node."""

    service: ServiceName
    name: str
    """The port's name ("" for a single unnamed port)."""
    protocol: str
    port: int
    cluster_ip: IPv4Address | None
    node_port: int | None = None
    external_ips: tuple[IPv4Address, ...] = ()
    load_balancer_ips: tuple[IPv4Address, ...] = ()
    affinity_timeout: int = 0
    """ClientIP session affinity timeout in seconds; 0: no affinity."""
    external_local: bool = False
    """externalTrafficPolicy: Local."""
    internal_local: bool = False
    """internalTrafficPolicy: Local."""
    algorithm: Algorithm | None = None
    """Per-service algorithm (annotation); None: the node's default."""
    endpoints: tuple[Endpoint, ...] = field(default=())
    """Every endpoint of the port, sorted."""

    @property
    def port_name(self) -> str:
        """kube-proxy's ServicePortName: `ns/svc:port-name`, or `ns/svc` when unnamed."""
        return f"{self.service}:{self.name}" if self.name else str(self.service)

    @property
    def has_external(self) -> bool:
        """Reachable from outside: a NodePort, external IPs or load-balancer IPs."""
        return bool(self.node_port or self.external_ips or self.load_balancer_ips)

    def cluster_endpoints(self) -> tuple[Endpoint, ...]:
        """Endpoints for a Cluster policy: ready ones, else serving-and-terminating ones."""
        return _usable(self.endpoints)

    def local_endpoints(self, node: str) -> tuple[Endpoint, ...]:
        """Endpoints for a Local policy on `node`: the same rule over this node's endpoints."""
        return _usable(tuple(e for e in self.endpoints if e.node == node))

    def internal_endpoints(self, node: str) -> tuple[Endpoint, ...]:
        """Endpoints for traffic to the ClusterIP (internalTrafficPolicy)."""
        return self.local_endpoints(node) if self.internal_local else self.cluster_endpoints()

    def external_endpoints(self, node: str) -> tuple[Endpoint, ...]:
        """Endpoints for traffic to NodePort, external and LB IPs (externalTrafficPolicy)."""
        return self.local_endpoints(node) if self.external_local else self.cluster_endpoints()


def _usable(endpoints: tuple[Endpoint, ...]) -> tuple[Endpoint, ...]:
    ready = tuple(e for e in endpoints if e.ready)
    if ready:
        return ready
    return tuple(e for e in endpoints if e.serving and e.terminating)


@dataclass(frozen=True)
class ServiceState:
    """A Service as this node serves it: its ports (sorted by protocol and port)."""

    name: ServiceName
    ports: tuple[ServicePort, ...]


class FrontendType(StrEnum):
    """How a frontend is reached (the `FLAGS=` type of Cilium's dump)."""

    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    EXTERNAL_IP = "ExternalIPs"
    LOAD_BALANCER = "LoadBalancer"


class BackendState(StrEnum):
    """Cilium's backend states: new connections go to active backends only; terminating
    backends keep their established flows; quarantined ones failed a health check."""

    ACTIVE = "active"
    TERMINATING = "terminating"
    QUARANTINED = "quarantined"
