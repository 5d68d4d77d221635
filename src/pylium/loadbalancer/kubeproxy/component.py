"""`KubeProxy`: the agent component of kube-proxy mode (`--kube-proxy-replacement=false`): the
shared `ServiceWatch` (Reflectors -> ServiceTable) feeds a `Proxier` that writes the node's
service rules with iptables-restore or nft in the agent's own namespace (the node's).

The table is read in the event loop (the reflectors mutate it there); generating and loading
the rules runs in a thread, since iptables-restore of 30 000 services takes seconds. A failed
sync makes the next one full (the Proxier's rule); a full one also runs every
`resync_interval` seconds, as kube-proxy's periodic sync. nftables chains flushed by one sync
are deleted by a follow-up a second later (`Proxier.pending_deletes`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from pylium.loadbalancer.kubeproxy.applier import NetnsApplier
from pylium.loadbalancer.kubeproxy.params import ProxyParams
from pylium.loadbalancer.kubeproxy.proxier import Applier, Mode, Proxier
from pylium.loadbalancer.watch import ServiceWatch
from pylium.store import Store

log = logging.getLogger(__name__)

FOLLOW_UP = 1.0
"""Seconds before the sync that deletes flushed nftables chains."""


@dataclass(frozen=True)
class KubeProxyParams:
    """Settings of the kube-proxy mode component.

    Attributes:
        node: this node's name.
        mode: iptables or nftables.
        cluster_cidr: the pods' range (kube-proxy's `--cluster-cidr`), if known.
        masquerade_all: kube-proxy's `--masquerade-all`. The agent sets it: its datapath
            hands replies between two pods of the node straight from veth to veth, past the
            node's conntrack, so a DNATed flow must be masqueraded to come back through it.
        snat_ip: the address masqueraded service traffic gets (`ProxyParams.snat_ip`); the
            agent gives its router IP.
        conntrack_tcp_be_liberal: kube-proxy's `--conntrack-tcp-be-liberal`
            (`ProxyParams.conntrack_tcp_be_liberal`).
        resync_interval: seconds between full syncs.
        retry_max: longest wait, in seconds, before retrying a failed sync.
    """

    node: str
    mode: Mode
    cluster_cidr: IPv4Network | None = None
    masquerade_all: bool = True
    snat_ip: IPv4Address | None = None
    conntrack_tcp_be_liberal: bool = False
    resync_interval: float = 3600.0
    retry_max: float = 5.0


class KubeProxy(ServiceWatch):
    """Services -> iptables or nftables rules in this process's network namespace."""

    def __init__(
        self, params: KubeProxyParams, store: Store, applier: Applier | None = None
    ) -> None:
        super().__init__(params.node, store, params.resync_interval, params.retry_max)
        self.params = params
        self.applier = applier if applier is not None else NetnsApplier(None)
        self.proxier = Proxier(params.mode, self._proxy_params(), self.applier)

    def _proxy_params(self) -> ProxyParams:
        return ProxyParams(
            node=self.node,
            node_addresses=tuple(self.node_addresses()),
            cluster_cidr=self.params.cluster_cidr,
            masquerade_all=self.params.masquerade_all,
            snat_ip=self.params.snat_ip,
            conntrack_tcp_be_liberal=self.params.conntrack_tcp_be_liberal,
        )

    async def run_pass(self, full: bool) -> float | None:
        """One sync: full when asked or when the node's addresses changed."""
        params = self._proxy_params()
        if params != self.proxier.params:
            self.proxier.params = params
            full = True
        if full:
            self.proxier.request_full()
        changed = set(self.table.take_changes())
        states = self.table.states()
        text = await asyncio.to_thread(self.proxier.sync_states, states, changed)
        if text:
            log.debug("%s sync: %d lines", self.params.mode, text.count("\n"))
        return FOLLOW_UP if self.proxier.pending_deletes else None
