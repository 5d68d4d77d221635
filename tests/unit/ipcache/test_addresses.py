"""What addresses the ipcache reads from Pods, Nodes and CiliumNodes."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

from pylium.ipcache.addresses import node_internal_ips, pod_cidrs, pod_ips, router_ips


def _pod(status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "spec": spec, "status": status}


def test_pod_ips_skip_ipv6_host_network_and_finished_pods() -> None:
    """IPv4 pod IPs only, once each; none for host-network or finished pods."""
    status = {"podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}]}
    assert pod_ips(_pod(status)) == [IPv4Address("10.244.1.5")]
    assert pod_ips(_pod(status, hostNetwork=True)) == []
    assert pod_ips(_pod({**status, "phase": "Succeeded"})) == []
    assert pod_ips(_pod({})) == []


def test_node_addresses_prefer_node_then_cilium_node() -> None:
    """InternalIPs come from Node.status, else CiliumNode.spec; pod CIDRs from the CiliumNode,
    else the Node (kubernetes IPAM mode); the router is the published CiliumInternalIP, else
    the first address of the pod CIDR."""
    node = {
        "spec": {"podCIDR": "10.244.7.0/24"},
        "status": {"addresses": [{"type": "Hostname", "address": "n"}]},
    }
    cn: dict[str, Any] = {"spec": {"addresses": [{"type": "InternalIP", "ip": "192.168.10.7"}]}}
    assert node_internal_ips(node, cn) == [IPv4Address("192.168.10.7")]
    assert pod_cidrs(node, cn) == [IPv4Network("10.244.7.0/24")]
    assert router_ips(node, cn) == [IPv4Address("10.244.7.1")]
    cn["spec"]["addresses"].append({"type": "CiliumInternalIP", "ip": "10.244.7.9"})
    cn["spec"]["ipam"] = {"podCIDRs": ["10.244.8.0/24"]}
    assert router_ips(node, cn) == [IPv4Address("10.244.7.9")]
    assert pod_cidrs(node, cn) == [IPv4Network("10.244.8.0/24")]
    assert (node_internal_ips(None, None), pod_cidrs(None, None), router_ips(None, None)) == (
        [],
        [],
        [],
    )
