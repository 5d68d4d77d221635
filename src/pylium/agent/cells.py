"""The agent's wiring: every component, in start order, in one place (Cilium's daemon/cmd/cells).

Groups, as Cilium's:

- Infrastructure reaches outside the process and is what tests fake: the cluster store, netlink
  and the REST server.
- ControlPlane is pure bookkeeping over protocols (no pyroute2, no libbpf): IPAM, endpoints
  and the flow observer (Hubble's model over the datapath's event ring buffer).
- Datapath is what programs the kernel: the node set-up (netlink) and the endpoint datapath
  (BPF programs, maps and tcx links, `datapath.reconciler.BpfDatapath`), faked in unit tests,
  and in native routing the routes to other nodes' pod CIDRs (`routing.NodeRoutes`).

Constructors only validate; `start()` opens, spawns and restores; `stop()` undoes in reverse
order and returns once every task a component started has ended.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from pylium import paths
from pylium.agent.ciliumnode import IpamStatusPublisher
from pylium.agent.lbfeatures import lb_features
from pylium.agent.rest import ApiBackend, RestServer
from pylium.datapath.endpoints import Datapath
from pylium.datapath.ipcache import ipcache_json
from pylium.datapath.lbconfig import LBConfig
from pylium.datapath.lxc import MAP_EVENTS
from pylium.datapath.nat import BpfMasquerade, MasqueradeParams, remove_masquerade
from pylium.datapath.netlink import Netlink, PyrouteNetlink
from pylium.datapath.policy import EnforcementParams, PolicyEnforcement
from pylium.datapath.reconciler import BpfDatapath, DatapathParams
from pylium.datapath.socklb import SockLB, remove_sock_lb
from pylium.endpoint import Endpoint, EndpointManager, EndpointParams
from pylium.hubble.endpoints import EndpointsLookup, IPCacheEndpoints
from pylium.hubble.metrics import FlowMetrics
from pylium.hubble.observer import Observer, ObserverParams, OpenReader, PinnedRingBuffer
from pylium.hubble.parser import FlowParser
from pylium.hubble.server import GrpcParams, hubble_server
from pylium.hubble.services import ServiceNames
from pylium.identity import IdentityAllocator
from pylium.ipam import AddressWatcher, IpamMode
from pylium.ipcache import IPCache, IPCacheParams
from pylium.loadbalancer.kubeproxy.component import KubeProxy, KubeProxyParams
from pylium.loadbalancer.kubeproxy.proxier import Mode as KubeProxyMode
from pylium.loadbalancer.reconciler import ServiceLB, ServiceLBParams
from pylium.metrics.agent import AgentMetrics
from pylium.metrics.server import MetricsParams, MetricsServer
from pylium.policy import PolicyConfig
from pylium.routing import (
    NodeRoutes,
    PyrouteRouteKernel,
    RouteKernel,
    RoutesParams,
    RoutingMode,
)
from pylium.store import Store, open_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentParams:
    """The agent's command-line settings."""

    node: str
    store_url: str
    socket: Path
    state_dir: Path
    bpf_dir: Path
    """The node's bpffs pin directory (maps, links)."""
    ipam: IpamMode = IpamMode.CLUSTER_POOL
    """Where pod addresses come from (the cluster's IPAM mode)."""
    mtu: int = 1500
    ct_gc_interval: float = 30.0
    ipam_gc_interval: float = 60.0
    ipam_gc_grace: float = 600.0
    status_interval: float = 0.5
    hubble: bool = True
    """Flow export (Cilium's enable-hubble): False turns the datapath's trace events off."""
    hubble_listen: str | None = None
    """The Observer gRPC API also on TCP (Hubble's ":4244"); always on <socket dir>/hubble.sock."""
    metrics_listen: str | None = None
    """Prometheus /metrics address (Cilium's ":9962"); None: not served."""
    routing_mode: RoutingMode = RoutingMode.NATIVE
    """native: routes to the other nodes' pod CIDRs (`NodeRoutes`); tunnel: no such routes."""
    uplink: str = "eth0"
    """The node's main device: native routes to other nodes leave through it."""
    masquerade: bool = False
    """BPF masquerade (Cilium's enable-bpf-masquerade): pod traffic to destinations outside
    `native_routing_cidr` leaves `uplink` with the node's address."""
    native_routing_cidr: str | None = None
    """Destinations never masqueraded (Cilium's ipv4-native-routing-cidr): the cluster's pods."""
    kube_proxy_replacement: bool = False
    """Services in eBPF: socket LB on `cgroup`, LB maps from `loadbalancer.ServiceLB`. False:
    kube-proxy mode when `kube_proxy_mode` is set, else no service handling in the agent."""
    sock_lb: bool | None = None
    node_port: bool | None = None
    external_ips: bool | None = None
    """Socket LB, and NodePorts/LoadBalancer IPs and externalIPs served to the outside by the
    uplink programs (Cilium's bpf-lb-sock, enable-node-port, enable-external-ips); None: as
    `kube_proxy_replacement`. Without it, those on run beside kube-proxy's rules
    (`agent.lbfeatures`)."""
    kube_proxy_mode: KubeProxyMode | None = None
    """Without the replacement: the node's services as kube-proxy's iptables or nftables rules
    (`loadbalancer.kubeproxy.KubeProxy`) in the agent's namespace; None: left alone."""
    cgroup: Path | None = None
    """The cgroup v2 directory socket LB attaches to (the lab's node cgroup; required with
    `kube_proxy_replacement`)."""
    lb: LBConfig = field(default_factory=LBConfig)
    """Default backend selection and Maglev table size of the eBPF service paths."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """Network policy enforcement mode and audit mode (`--policy-enforcement`,
    `--policy-audit-mode`)."""
    on_step: Callable[[str], None] | None = None
    """Crash-test hook called at each named ADD step (see EndpointParams.on_step)."""


class Agent:
    """One node's agent: start() brings it up (serving as soon as it can), stop() takes it down."""

    def __init__(
        self,
        params: AgentParams,
        store: Store | None = None,
        netlink: Netlink | None = None,
        datapath: Datapath | None = None,
        open_events: OpenReader = PinnedRingBuffer,
        route_kernel: RouteKernel | None = None,
    ) -> None:
        """`store`, `netlink`, `datapath`, the event reader (`open_events`) and the node-routes
        kernel (`route_kernel`) default to the real ones; tests pass fakes."""
        if not params.node:
            raise ValueError("node name must not be empty")
        self.lb_features = lb_features(
            params.kube_proxy_replacement,
            params.sock_lb,
            params.node_port,
            params.external_ips,
            params.cgroup,
        )
        if params.kube_proxy_replacement and params.kube_proxy_mode is not None:
            raise ValueError("kube-proxy mode and kube-proxy replacement exclude each other")
        if params.masquerade and params.native_routing_cidr is None:
            raise ValueError("BPF masquerade needs the native-routing CIDR it must not masquerade")
        self.params = params
        # Infrastructure
        self._store = store
        self._netlink: Netlink = netlink if netlink is not None else PyrouteNetlink()
        # Datapath: BPF programs on every endpoint, loaded once the pod CIDR is known
        self._datapath: Datapath = (
            datapath
            if datapath is not None
            else BpfDatapath(
                DatapathParams(
                    params.bpf_dir,
                    ct_gc_interval=params.ct_gc_interval,
                    tunnel=params.routing_mode is RoutingMode.TUNNEL,
                    mtu=params.mtu,
                    trace_events=params.hubble,
                )
            )
        )
        # Datapath: masquerade and the per-packet service path on the uplink
        # (to-netdev/from-netdev), sharing the node's maps
        node_port = self.lb_features.node_port
        external_ips = self.lb_features.external_ips
        self._masquerade = (
            BpfMasquerade(
                MasqueradeParams(
                    params.bpf_dir,
                    params.uplink,
                    # Without masquerading nothing is excluded from it: any prefix will do.
                    params.native_routing_cidr or "0.0.0.0/32",
                    gc_interval=params.ct_gc_interval,
                    masquerade=params.masquerade,
                    node_port=node_port,
                    external_ips=external_ips,
                    tunnel=params.routing_mode is RoutingMode.TUNNEL,
                    lb=params.lb,
                )
            )
            if params.masquerade or node_port or external_ips
            else None
        )
        # Datapath: native routing's routes to the other nodes' pod CIDRs
        self._route_kernel: RouteKernel | None = None
        if params.routing_mode is RoutingMode.NATIVE:
            self._route_kernel = (
                route_kernel if route_kernel is not None else PyrouteRouteKernel(params.uplink)
            )
        self._routes: NodeRoutes | None = None
        self.backend = ApiBackend(node=params.node, mtu=params.mtu, state_dir=params.state_dir)
        self.registry = CollectorRegistry()
        self.metrics = AgentMetrics(self.registry)
        self._rest = RestServer(  # serves 503 until ready
            params.socket, self.backend, middlewares=[self.metrics.api_middleware()]
        )
        self._flow_metrics = FlowMetrics(self.registry)
        self._hubble = hubble_server(
            GrpcParams(params.socket.parent / "hubble.sock", params.hubble_listen),
            lambda: self._observer,
            params.node,
        )
        self._metrics_server = (
            MetricsServer(MetricsParams(params.metrics_listen), self.registry)
            if params.metrics_listen is not None
            else None
        )
        # ControlPlane, built once the pod CIDR is known
        self._addresses: AddressWatcher | None = None
        self._publisher: IpamStatusPublisher | None = None
        self._endpoints: EndpointManager | None = None
        self._datapath_started = False
        self._open_events = open_events
        self._sock_lb: SockLB | None = None
        self._service_lb: ServiceLB | None = None
        self._kube_proxy: KubeProxy | None = None
        self._observer: Observer | None = None
        # ControlPlane: identities and the ipcache (every pod/node IP -> identity, node)
        self._allocator: IdentityAllocator | None = None
        self._ipcache: IPCache | None = None
        # ControlPlane + Datapath: network policy (repository, policy maps)
        self._policy: PolicyEnforcement | None = None

    @property
    def store(self) -> Store:
        """The cluster store (opened at start)."""
        if self._store is None:
            raise RuntimeError("agent not started")
        return self._store

    @property
    def hubble_port(self) -> int:
        """The bound Observer API TCP port once started; 0 without `hubble_listen`."""
        return self._hubble.port

    @property
    def metrics_port(self) -> int | None:
        """The bound /metrics port once started (`metrics_listen` may ask for port 0)."""
        return self._metrics_server.port if self._metrics_server is not None else None

    async def start(self) -> None:
        """Open infrastructure, serve, wait for the pod CIDR, restore endpoints, become ready."""
        p = self.params
        p.state_dir.mkdir(parents=True, exist_ok=True)
        if self._store is None:
            self._store = open_store(p.store_url)
        if isinstance(self._netlink, PyrouteNetlink):
            await self._netlink.start()
        await self._rest.start()
        await self._hubble.start()  # UNAVAILABLE until the observer runs
        if self._metrics_server is not None:
            await self._metrics_server.start()

        self._addresses = AddressWatcher(self.store, p.node, p.ipam, p.state_dir / "ipam.json")
        ipam = await self._addresses.start()
        log.info("node %s: %s IPAM, %s, router %s", p.node, p.ipam, ipam.describe(), ipam.router_ip)

        # Identities before the datapath: endpoints get theirs at ADD, the ipcache map fills.
        self._allocator = IdentityAllocator(self.store)
        await self._allocator.start()
        self._ipcache = IPCache(self.store, self._allocator, IPCacheParams(node=p.node))
        await self._ipcache.start()
        if isinstance(self._datapath, BpfDatapath):
            self._datapath.use_ipcache(self._ipcache)
            self.backend.ipcache_dump = self._ipcache_dump

        # Datapath: the router IP must be in place before a pod's default route points at it.
        await self._netlink.setup_node(str(ipam.router_ip))
        # crd mode has no pod CIDR: router/32 makes the datapath's "not a local pod" drop moot
        await self._datapath.start(str(ipam.router_ip), str(ipam.cidr or f"{ipam.router_ip}/32"))
        self._datapath_started = True
        if self._masquerade is not None:
            await self._masquerade.start()
        else:
            remove_masquerade(p.bpf_dir, p.uplink)  # turned off since the last run
        if not self.lb_features.sock_lb:
            remove_sock_lb(p.bpf_dir)  # turned off since the last run
        if self.lb_features.lb_maps:
            # Socket LB: a connect() to a service from any pod of the node goes to a backend.
            # Without it the uplink programs still read the LB maps sock.o pins.
            self._sock_lb = (
                SockLB.load(p.bpf_dir, p.cgroup, lb=p.lb)
                if self.lb_features.sock_lb and p.cgroup is not None
                else SockLB.open_maps(p.bpf_dir, lb=p.lb)
            )
            lb_params = ServiceLBParams(
                p.node,
                algorithm=p.lb.algorithm,
                maglev_table_size=p.lb.maglev_table_size,
                maglev_seed=p.lb.maglev_seed,
            )
            self._service_lb = ServiceLB(lb_params, self.store, self._sock_lb)
            await self._service_lb.start()
            self.backend.lb_dump = self._service_lb.dump
        if p.kube_proxy_mode is not None:
            # kube-proxy mode: the kernel's DNAT in this (the node's) namespace, all flows
            # masqueraded (see KubeProxyParams.masquerade_all), to the router IP (snat_ip).
            cidr = p.native_routing_cidr or (str(ipam.cidr) if ipam.cidr else None)
            self._kube_proxy = KubeProxy(
                KubeProxyParams(
                    p.node,
                    p.kube_proxy_mode,
                    IPv4Network(cidr) if cidr else None,
                    snat_ip=ipam.router_ip,
                    # the eBPF NodePort path's forwarded flows bypass the node's conntrack
                    conntrack_tcp_be_liberal=self.lb_features.node_port
                    or self.lb_features.external_ips,
                ),
                self.store,
            )
            await self._kube_proxy.start()
        if self._route_kernel is not None:
            if isinstance(self._route_kernel, PyrouteRouteKernel):
                await self._route_kernel.start()
            self._routes = NodeRoutes(
                RoutesParams(node=p.node, device=p.uplink), self.store, self._route_kernel
            )
            await self._routes.start()

        self._endpoints = EndpointManager(
            EndpointParams(
                state_dir=p.state_dir,
                delete_queue_dir=paths.delete_queue_dir(p.socket),
                mtu=p.mtu,
                ipam_gc_interval=p.ipam_gc_interval,
                ipam_gc_grace=p.ipam_gc_grace,
                on_step=p.on_step,
                before_plumb=self._prepare_policy,
            ),
            self._netlink,
            ipam,
            self._datapath,
        )
        endpoints = self._endpoints
        await self._endpoints.start()  # rolls back interrupted ADDs before anything is served
        if isinstance(self._datapath, BpfDatapath):
            # Network policy: the pinned maps keep enforcing until the repository is synced.
            self._policy = PolicyEnforcement(
                EnforcementParams(p.bpf_dir, p.policy, node=p.node),
                self.store,
                self._allocator,
                lambda: {
                    f"{e.pod_namespace}/{e.pod_name}": e.id
                    for e in endpoints.endpoints()
                    if e.pod_name
                },
            )
            await self._policy.start()
        self._publisher = IpamStatusPublisher(self.store, p.node, ipam, p.status_interval)
        await self._publisher.start()
        # crd mode: no pod CIDR, so an unknown address is not classed as world
        ipcache = self._ipcache
        lookup = EndpointsLookup(
            self._endpoints.endpoints,
            str(ipam.router_ip),
            str(ipam.cidr or ""),
            ipcache=IPCacheEndpoints(ipcache.table, ipcache.allocator) if ipcache else None,
        )
        self._observer = Observer(
            ObserverParams(events_pin=p.bpf_dir / MAP_EVENTS),
            FlowParser(
                lookup,
                p.node,
                policies=self._policy.flow_policies if self._policy is not None else None,
                services=ServiceNames(self._service_lb.maps)
                if self._service_lb is not None
                else None,
            ),
            self._open_events,
        )
        self._flow_metrics.attach(self._observer)
        self.metrics.sources.endpoints = lambda: len(endpoints.endpoints())
        self.metrics.sources.datapath = self._datapath.metrics
        await self._observer.start()
        self.backend.datapath, self.backend.observer = self._datapath, self._observer
        self.backend.ipam, self.backend.endpoints = ipam, self._endpoints
        log.info("agent of node %s ready", p.node)

    async def _prepare_policy(self, ep: Endpoint) -> None:
        """Install a new pod's policy before its interface can pass traffic."""
        if self._policy is not None and ep.pod_name:
            await self._policy.prepare(ep.id, f"{ep.pod_namespace}/{ep.pod_name}")

    def _ipcache_dump(self) -> dict[str, Any]:
        """GET /v1/ipcache: the ipcache table and the kernel's pylium_ipcache4."""
        if self._ipcache is None or not isinstance(self._datapath, BpfDatapath):
            return {"entries": [], "map": []}
        return ipcache_json(self._ipcache.table.entries(), self._datapath.read_ipcache())

    async def stop(self) -> None:
        """Stop serving, then every component in reverse order."""
        self.backend.ipam = self.backend.endpoints = self.backend.datapath = None
        self.backend.observer = None
        await self._rest.stop()
        await self._hubble.stop()
        if self._metrics_server is not None:
            await self._metrics_server.stop()
        if self._observer is not None:
            await self._observer.stop()
        if self._publisher is not None:
            await self._publisher.stop()
        if self._policy is not None:
            await self._policy.stop()  # the pinned policy maps keep enforcing
            self._policy = None
        if self._endpoints is not None:
            await self._endpoints.stop()
        if self._addresses is not None:
            await self._addresses.stop()
        self.backend.ipcache_dump = None
        if self._ipcache is not None:
            await self._ipcache.stop()
        if self._allocator is not None:
            await self._allocator.stop()
        if self._routes is not None:
            await self._routes.stop()  # routes stay: cross-node traffic flows during a restart
            self._routes = None
        if isinstance(self._route_kernel, PyrouteRouteKernel):
            await self._route_kernel.stop()
        self.backend.lb_dump = None
        if self._service_lb is not None:
            await self._service_lb.stop()
            self._service_lb = None
        if self._kube_proxy is not None:
            await self._kube_proxy.stop()  # the rules stay: services keep working meanwhile
            self._kube_proxy = None
        if self._sock_lb is not None:
            self._sock_lb.close()  # fds only: the pinned maps and cgroup links stay
            self._sock_lb = None
        if self._masquerade is not None:
            await self._masquerade.stop()  # fds only: the uplink's pinned links keep masquerading
        if self._datapath_started:
            await self._datapath.stop()  # closes fds only: pinned maps and links stay
            self._datapath_started = False
        if isinstance(self._netlink, PyrouteNetlink):
            await self._netlink.stop()
        if self._store is not None:
            await self._store.close()
