"""Per service port, the decisions both rule generators share (kube-proxy's syncProxyRules
preamble): which endpoints each traffic policy uses on this node, which policy chains exist,
and what happens to traffic with no endpoint to go to.

- No endpoints at all: REJECT (ICMP port unreachable / TCP reset), internal and external.
- A `Local` policy with endpoints only on other nodes: DROP ("has no local endpoints").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pylium.loadbalancer.model import Endpoint, ServicePort

NoEndpoints = Literal["reject", "drop"]


@dataclass(frozen=True)
class PortPlan:
    """What the rules of one service port do on one node."""

    sp: ServicePort
    cluster: tuple[Endpoint, ...]
    local: tuple[Endpoint, ...]
    uses_cluster_chain: bool
    """A cluster-policy chain (KUBE-SVC / service-) exists."""
    uses_local_chain: bool
    """A local-policy chain (KUBE-SVL / local-) exists."""
    internal_block: NoEndpoints | None
    """What ClusterIP traffic meets when it has no endpoint; None: it has some."""
    external_block: NoEndpoints | None
    """The same for NodePort / external / LB traffic."""

    @property
    def chain_endpoints(self) -> tuple[Endpoint, ...]:
        """Every endpoint that gets an endpoint chain."""
        eps = set(self.cluster if self.uses_cluster_chain else ())
        eps |= set(self.local if self.uses_local_chain else ())
        return tuple(sorted(eps))


def plan(sp: ServicePort, node: str) -> PortPlan:
    """The plan of `sp` on `node`."""
    cluster = sp.cluster_endpoints()
    local = sp.local_endpoints(node)
    external = sp.has_external
    # External traffic from pods and the node short-circuits to the cluster chain even when
    # externalTrafficPolicy is Local, so an external service always has one.
    uses_cluster = bool(cluster) and (not sp.internal_local or external)
    uses_local = bool(local) and (sp.internal_local or (external and sp.external_local))

    def block(is_local: bool) -> NoEndpoints | None:
        if local if is_local else cluster:
            return None
        return "drop" if is_local and cluster else "reject"

    return PortPlan(
        sp=sp,
        cluster=cluster,
        local=local,
        uses_cluster_chain=uses_cluster,
        uses_local_chain=uses_local,
        internal_block=block(sp.internal_local),
        external_block=block(sp.external_local) if external else None,
    )
