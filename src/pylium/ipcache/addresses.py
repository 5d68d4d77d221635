"""The IPv4 addresses store objects give the ipcache: a pod's IPs, a node's internal IPs, a
node's router IP. IPv6 addresses are skipped (pylium's datapath is IPv4 only)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from ipaddress import IPv4Address
from typing import Any

from pylium.store import Object


def _ipv4(values: Iterable[Any]) -> list[IPv4Address]:
    out: list[IPv4Address] = []
    for value in values:
        try:
            ip = ipaddress.ip_address(str(value))
        except ValueError:
            continue
        if isinstance(ip, IPv4Address) and ip not in out:
            out.append(ip)
    return out


def pod_ips(pod: Object) -> list[IPv4Address]:
    """A running pod's IPs; none for host-network and finished pods (their IP is the
    node's, or gone)."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    if spec.get("hostNetwork") or status.get("phase") in ("Succeeded", "Failed"):
        return []
    listed = [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict)]
    return _ipv4([status.get("podIP"), *listed])


def node_internal_ips(node: Object | None, cilium_node: Object | None) -> list[IPv4Address]:
    """A node's InternalIP addresses: Node.status.addresses, else CiliumNode.spec.addresses."""
    found = [
        a.get("address")
        for a in ((node or {}).get("status") or {}).get("addresses") or []
        if a.get("type") == "InternalIP"
    ]
    if not found:
        found = [
            a.get("ip")
            for a in ((cilium_node or {}).get("spec") or {}).get("addresses") or []
            if a.get("type") == "InternalIP"
        ]
    return _ipv4(found)


def router_ips(cilium_node: Object | None) -> list[IPv4Address]:
    """The node's router (pylium_host) IPs: the first address of each IPv4 pod CIDR."""
    cidrs = (((cilium_node or {}).get("spec") or {}).get("ipam") or {}).get("podCIDRs") or []
    out: list[IPv4Address] = []
    for cidr in cidrs:
        try:
            net = ipaddress.ip_network(str(cidr), strict=False)
        except ValueError:
            continue
        if isinstance(net, ipaddress.IPv4Network) and net.num_addresses > 1:
            out.append(net.network_address + 1)
    return out
