"""Per-node settings of the kube-proxy rule generators."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network


@dataclass(frozen=True)
class ProxyParams:
    """What kube-proxy learns from its flags and node.

    Attributes:
        node: this node's name (Local traffic policies keep its endpoints).
        node_addresses: addresses that accept NodePort traffic (nftables `nodeport-ips`;
            iptables matches `addrtype LOCAL` instead).
        cluster_cidr: the pods' range (`--cluster-cidr`): traffic from outside it to a
            ClusterIP is masqueraded, traffic from inside short-circuits Local policies.
        service_cidr: the ClusterIP range; nftables drops traffic to unallocated ClusterIPs.
        masquerade_all: kube-proxy's `--masquerade-all`: every connection to a ClusterIP is
            masqueraded, so replies come back through the node's conntrack even when the
            datapath would deliver them pod to pod directly; pylium extends it to pod traffic
            to an externalTrafficPolicy=Local service's external addresses (NodePort, LB,
            external IPs), which kube-proxy sends to the cluster chain unmasqueraded.
        snat_ip: masquerade to this address (`SNAT --to-source`) instead of the outgoing
            interface's (`MASQUERADE`), a departure from kube-proxy for pylium's datapath: the
            agent gives its router IP, an address of the node's pod CIDR, so a backend's reply
            is pod-to-pod traffic (routed or tunnelled back, never BPF-masqueraded to a node
            address on the uplink, never leaving a tunnel for the underlay).
        conntrack_tcp_be_liberal: kube-proxy's `--conntrack-tcp-be-liberal`: no rule drops
            packets conntrack finds INVALID (iptables `KUBE-FORWARD`). The agent sets it when
            the eBPF NodePort path runs beside these rules: that path delivers a forwarded
            connection's first packets past conntrack, so the backend's reply looks INVALID.
    """

    node: str
    node_addresses: tuple[IPv4Address, ...] = ()
    cluster_cidr: IPv4Network | None = None
    service_cidr: IPv4Network | None = None
    masquerade_all: bool = False
    snat_ip: IPv4Address | None = None
    conntrack_tcp_be_liberal: bool = False
