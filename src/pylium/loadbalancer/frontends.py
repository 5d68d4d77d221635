"""ServiceState -> Frontends: the rows one node's BPF service path serves (Cilium's Frontends
table). Per service port:

- ClusterIP `VIP:port` with the endpoints of internalTrafficPolicy;
- NodePort `0.0.0.0:nodePort` (the surrogate matched on any node address) and one per node
  address, ExternalIPs and LoadBalancer IPs, with the endpoints of externalTrafficPolicy;
- when externalTrafficPolicy is Local but internal is Cluster, each external frontend gets a
  second, internal-scope row (`/i`) so traffic from inside the cluster reaches every backend
  (Cilium's "two scopes").

Backends in slots are the selected endpoints (ready, else serving-and-terminating); other
terminating endpoints in scope follow as quarantine slots (QCOUNT) so established flows keep
their backend while new ones never pick it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from pylium.loadbalancer.model import (
    Algorithm,
    BackendState,
    Endpoint,
    FrontendType,
    L4Addr,
    ServiceName,
    ServicePort,
    ServiceState,
)

SURROGATE = IPv4Address("0.0.0.0")
"""The NodePort frontend address that stands for every address of the node."""


@dataclass(frozen=True, order=True)
class Backend:
    """A backend as the BPF backends map holds it (state from the endpoint's conditions)."""

    address: L4Addr
    state: BackendState
    node: str | None


@dataclass(frozen=True, order=True)
class FrontendKey:
    """Where a frontend is matched: address and scope (internal scope only for two-scope
    services)."""

    address: L4Addr
    internal: bool = False


@dataclass(frozen=True)
class Frontend:
    """One frontend row."""

    key: FrontendKey
    type: FrontendType
    service: ServiceName
    port_name: str
    backends: tuple[Backend, ...]
    """Slots new connections choose from (COUNT)."""
    quarantined: tuple[Backend, ...]
    """Terminating backends kept for established flows (QCOUNT)."""
    affinity_timeout: int
    algorithm: Algorithm | None
    external_local: bool
    internal_local: bool
    two_scopes: bool
    routable: bool
    reject: bool
    """No backends because the service has none at all: reject (kube-proxy's REJECT); an
    empty Local frontend of a service with backends elsewhere drops instead."""


def frontends(
    state: ServiceState, node: str, node_addresses: Sequence[IPv4Address]
) -> dict[FrontendKey, Frontend]:
    """Every frontend of a service on `node`."""
    out: dict[FrontendKey, Frontend] = {}
    for sp in state.ports:
        for fe in _port_frontends(sp, node, node_addresses):
            out[fe.key] = fe
    return out


def _port_frontends(
    sp: ServicePort, node: str, node_addresses: Sequence[IPv4Address]
) -> Iterable[Frontend]:
    reject = not sp.cluster_endpoints()
    two_scopes = sp.external_local and not sp.internal_local

    def make(
        addr: IPv4Address, port: int, type_: FrontendType, external: bool, internal_scope: bool
    ) -> Frontend:
        local = sp.internal_local if not external or internal_scope else sp.external_local
        selected = sp.local_endpoints(node) if local else sp.cluster_endpoints()
        in_scope = [e for e in sp.endpoints if not local or e.node == node]
        rest = [e for e in in_scope if e.terminating and e not in selected]
        return Frontend(
            key=FrontendKey(L4Addr(addr, port, sp.protocol), internal_scope),
            type=type_,
            service=sp.service,
            port_name=sp.name,
            backends=tuple(sorted(_backend(e, sp.protocol) for e in selected)),
            quarantined=tuple(sorted(_backend(e, sp.protocol) for e in rest)),
            affinity_timeout=sp.affinity_timeout,
            algorithm=sp.algorithm,
            external_local=external and sp.external_local,
            internal_local=sp.internal_local,
            two_scopes=external and two_scopes,
            routable=type_ != FrontendType.CLUSTER_IP and addr != SURROGATE,
            reject=reject,
        )

    if sp.cluster_ip is not None:
        yield make(sp.cluster_ip, sp.port, FrontendType.CLUSTER_IP, False, False)
    external: list[tuple[IPv4Address, int, FrontendType]] = []
    if sp.node_port:
        for addr in (SURROGATE, *sorted(node_addresses)):
            external.append((addr, sp.node_port, FrontendType.NODE_PORT))
    external += [(ip, sp.port, FrontendType.EXTERNAL_IP) for ip in sp.external_ips]
    external += [(ip, sp.port, FrontendType.LOAD_BALANCER) for ip in sp.load_balancer_ips]
    for addr, port, type_ in external:
        yield make(addr, port, type_, True, False)
        if two_scopes:
            yield make(addr, port, type_, True, True)


def _backend(e: Endpoint, protocol: str) -> Backend:
    state = BackendState.TERMINATING if e.terminating else BackendState.ACTIVE
    return Backend(L4Addr(e.address, e.port, protocol), state, e.node)


def render(frontends: dict[FrontendKey, Frontend]) -> str:
    """The Frontends table as text, one line per frontend (as Cilium's `db/show frontends`):
    address (`/i` for the internal scope), type, service, port name, then each backend slot
    with its state and node; `(reject)` or `(drop)` when there are none."""
    lines = []
    for key in sorted(frontends):
        fe = frontends[key]
        scope = "/i" if key.internal else ""
        slots = [
            f"{b.address.address}:{b.address.port}({b.state},{b.node or '-'})"
            for b in (*fe.backends, *fe.quarantined)
        ]
        if not fe.backends:
            slots.insert(0, "(reject)" if fe.reject else "(drop)")
        lines.append(
            f"{key.address}{scope} {fe.type} {fe.service} {fe.port_name or '-'} {' '.join(slots)}"
        )
    return "".join(f"{line}\n" for line in lines)
