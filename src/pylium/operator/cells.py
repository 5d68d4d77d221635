"""The operator's wiring: every component in one place (as the agent's `cells.py`).

- the cluster store (infrastructure);
- node IPAM: the pod CIDR ledger and the Node reconciler (by IPAM mode);
- identity GC;
- Services: ClusterIP, NodePort and LoadBalancer IP allocation (`loadbalancer.ServiceIPAM`) and
  the EndpointSlice controller (`operator.endpointslices`).

Constructors only validate; `start()` opens the store and spawns one task per component;
`stop()` cancels them and closes the store.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from ipaddress import IPv4Network

from pylium.ipam.sources import IpamMode
from pylium.loadbalancer.allocation import DEFAULT_NODE_PORTS, DEFAULT_SERVICE_CIDR, Ranges
from pylium.loadbalancer.serviceipam import ServiceIPAM
from pylium.operator.endpointslices import EndpointSliceController
from pylium.operator.identitygc import IdentityGC, PodsInUse
from pylium.operator.ledger import CIDRLedger
from pylium.operator.nodeipam import NodeIpamReconciler
from pylium.operator.podcidr import parse_pools
from pylium.store import Store, open_store

log = logging.getLogger(__name__)

DEFAULT_POOL = ("10.0.0.0/8",)
"""Cilium's default `clusterPoolIPv4PodCIDRList`."""
DEFAULT_MASK_SIZE = 24
"""Cilium's default `clusterPoolIPv4MaskSize`."""


@dataclass(frozen=True)
class OperatorParams:
    """The operator's command-line settings."""

    store_url: str
    ipam: IpamMode = IpamMode.CLUSTER_POOL
    pool: tuple[str, ...] = DEFAULT_POOL
    mask_size: int = DEFAULT_MASK_SIZE
    resync_interval: float = 30.0
    identity_gc_grace: float = 60.0
    identity_gc_interval: float = 15.0
    service_cidr: str = str(DEFAULT_SERVICE_CIDR)
    """ClusterIPs come from here (kube-apiserver's `--service-cluster-ip-range`)."""
    node_ports: tuple[int, int] = DEFAULT_NODE_PORTS
    """NodePorts come from here, both ends included (`--service-node-port-range`)."""
    lb_pools: tuple[str, ...] = ()
    """LoadBalancer IP pools besides the CiliumLoadBalancerIPPool objects (`--lb-pool`)."""


class Operator:
    """The cluster's operator: start() spawns its components, stop() ends them."""

    def __init__(self, params: OperatorParams, store: Store | None = None) -> None:
        """`store` defaults to the one `params.store_url` names; tests may pass their own."""
        self.params = params
        pools = parse_pools(params.pool, params.mask_size)  # bad flags fail before any I/O
        self._store = store
        self._pools = pools
        self._ranges = Ranges(IPv4Network(params.service_cidr), params.node_ports)
        self._lb_pools = [IPv4Network(c) for c in params.lb_pools]
        low, high = params.node_ports
        if not 0 < low <= high < 65536:
            raise ValueError(f"node port range {low}-{high}: expected 1 <= low <= high <= 65535")
        self._tasks: list[asyncio.Task[None]] = []
        self.nodes: NodeIpamReconciler | None = None
        self.identity_gc: IdentityGC | None = None
        self.service_ipam: ServiceIPAM | None = None
        self.endpoint_slices: EndpointSliceController | None = None

    async def start(self) -> None:
        """Open the store and start reconciling nodes and collecting identities."""
        p = self.params
        if self._store is None:
            self._store = open_store(p.store_url)
        store = self._store
        ledger = None if p.ipam == IpamMode.CRD else CIDRLedger(store, self._pools, p.mask_size)
        self.nodes = NodeIpamReconciler(store, p.ipam, ledger, p.resync_interval)
        self.identity_gc = IdentityGC(
            store, PodsInUse(store), p.identity_gc_grace, p.identity_gc_interval
        )
        self.service_ipam = ServiceIPAM(store, self._ranges, self._lb_pools, p.resync_interval)
        self.endpoint_slices = EndpointSliceController(store, p.resync_interval)
        self._tasks = [
            asyncio.create_task(self.nodes.run(), name="node-ipam"),
            asyncio.create_task(self.identity_gc.run(), name="identity-gc"),
            asyncio.create_task(self.service_ipam.run(), name="service-ipam"),
            asyncio.create_task(self.endpoint_slices.run(), name="endpoint-slices"),
        ]
        pools = ", ".join(p.pool) if ledger is not None else "-"
        log.info(
            "operator started: ipam %s, pool %s /%d; services %s, LB pools %s",
            p.ipam,
            pools,
            p.mask_size,
            p.service_cidr,
            ", ".join(p.lb_pools) or "-",
        )

    async def wait(self) -> None:
        """Return when a component ends by itself (it failed: the error is raised)."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()

    async def stop(self) -> None:
        """Cancel every component, wait for them, close the store."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._store is not None:
            await self._store.close()
