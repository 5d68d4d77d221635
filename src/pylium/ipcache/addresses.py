"""The IPv4 addresses store objects give the ipcache: a pod's IPs, a node's internal IPs, its
pod CIDRs and its router IP. IPv6 addresses are skipped (pylium's datapath is IPv4 only)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from pylium.ipam.sources import cilium_node_pod_cidrs, node_pod_cidrs
from pylium.store import Object

ROUTER_ADDRESS_TYPE = "CiliumInternalIP"
"""The CiliumNode.spec.addresses type of the node's router (cilium_host) IP, as in Cilium."""


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


def _spec_addresses(cilium_node: Object | None, type_: str) -> list[Any]:
    addresses = ((cilium_node or {}).get("spec") or {}).get("addresses") or []
    return [a.get("ip") for a in addresses if a.get("type") == type_]


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
    return _ipv4(found or _spec_addresses(cilium_node, "InternalIP"))


def pod_cidrs(node: Object | None, cilium_node: Object | None) -> list[IPv4Network]:
    """A node's IPv4 pod CIDRs: the CiliumNode's (cluster-pool), else the Node's
    (kubernetes IPAM mode)."""
    cidrs = cilium_node_pod_cidrs(cilium_node) if cilium_node else []
    if not cidrs and node:
        cidrs = node_pod_cidrs(node)
    out: list[IPv4Network] = []
    for cidr in cidrs:
        try:
            out.append(IPv4Network(cidr, strict=False))
        except ValueError:
            continue
    return out


def router_ips(node: Object | None, cilium_node: Object | None) -> list[IPv4Address]:
    """The node's router (pylium_host) IPs: the CiliumInternalIP addresses its CiliumNode
    lists, else the first address of each pod CIDR (where the agent puts it in cluster-pool
    and kubernetes IPAM modes)."""
    published = _ipv4(_spec_addresses(cilium_node, ROUTER_ADDRESS_TYPE))
    if published:
        return published
    return [c.network_address + 1 for c in pod_cidrs(node, cilium_node) if c.num_addresses > 1]
