"""Which eBPF service features a node runs: Cilium's per-feature switches (`bpf-lb-sock`,
`enable-node-port`, `enable-external-ips`), each defaulting to `kube-proxy-replacement`.

With `--kube-proxy-replacement false` the features switched on run beside kube-proxy's rules
and take precedence where they apply (socket LB translates at connect(), before any iptables
rule sees the ClusterIP; the uplink's tc ingress DNATs a NodePort before PREROUTING): a
partial replacement. Host ports stay with the CNI chain's `portmap` plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LBFeatures:
    """The eBPF service features of one node."""

    sock_lb: bool
    """Socket LB on the node's cgroup: pods' connect()/sendmsg() to a service go to a backend."""
    node_port: bool
    """NodePorts and LoadBalancer IPs served to the outside by the uplink programs."""
    external_ips: bool
    """externalIPs served to the outside by the uplink programs."""

    @property
    def lb_maps(self) -> bool:
        """Whether the node's LB maps must be filled (some eBPF path reads them)."""
        return self.sock_lb or self.node_port or self.external_ips


def lb_features(
    kube_proxy_replacement: bool,
    sock_lb: bool | None,
    node_port: bool | None,
    external_ips: bool | None,
    cgroup: Path | None,
) -> LBFeatures:
    """Each switch as asked, else as `kube_proxy_replacement`.

    Raises:
        ValueError: the replacement without socket LB (pylium has no per-packet ClusterIP
            path), or socket LB without the cgroup to attach to; the message names the flags.
    """
    features = LBFeatures(
        sock_lb=kube_proxy_replacement if sock_lb is None else sock_lb,
        node_port=kube_proxy_replacement if node_port is None else node_port,
        external_ips=kube_proxy_replacement if external_ips is None else external_ips,
    )
    if kube_proxy_replacement and not features.sock_lb:
        raise ValueError(
            "--kube-proxy-replacement true needs --bpf-lb-sock true: pylium serves ClusterIPs"
            " in eBPF only through socket LB (no per-packet ClusterIP path); for kube-proxy's"
            " rules with some eBPF features use --kube-proxy-replacement false"
            " --kube-proxy-mode iptables|nftables and --bpf-lb-sock/--enable-node-port/"
            "--enable-external-ips true"
        )
    if features.sock_lb and cgroup is None:
        raise ValueError("socket LB (--bpf-lb-sock true) needs --cgroup to attach to")
    return features
