"""The routes a node wants in native routing: for every other node, its pod CIDRs via its
InternalIP. Pure: computed from the store's CiliumNode and Node objects."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from pylium.store import Object


@dataclass(frozen=True, order=True)
class NodeRoute:
    """`dst via gateway` out of the node's uplink."""

    dst: str
    """A pod CIDR, e.g. "10.244.2.0/24"."""
    gateway: str
    """The owning node's InternalIP."""


def internal_ip(cilium_node: Object | None, node: Object | None) -> str | None:
    """A node's InternalIP: CiliumNode `spec.addresses` first (Cilium's source), else Node
    `status.addresses`."""
    for addr in ((cilium_node or {}).get("spec") or {}).get("addresses") or []:
        if addr.get("type") == "InternalIP" and _ipv4(addr.get("ip")):
            return str(addr["ip"])
    for addr in ((node or {}).get("status") or {}).get("addresses") or []:
        if addr.get("type") == "InternalIP" and _ipv4(addr.get("address")):
            return str(addr["address"])
    return None


def pod_cidrs(cilium_node: Object) -> list[str]:
    """The IPv4 pod CIDRs of a CiliumNode."""
    cidrs = ((cilium_node.get("spec") or {}).get("ipam") or {}).get("podCIDRs") or []
    return [c for c in cidrs if isinstance(c, str) and ":" not in c]


def desired_routes(
    self_name: str, cilium_nodes: Iterable[Object], nodes: Iterable[Object]
) -> set[NodeRoute]:
    """Routes node `self_name` needs: each other node's pod CIDRs via its InternalIP. A node
    without an address or CIDR yet contributes nothing (its objects will change)."""
    by_name = {n["metadata"]["name"]: n for n in nodes}
    routes: set[NodeRoute] = set()
    for cn in cilium_nodes:
        name = cn["metadata"]["name"]
        if name == self_name:
            continue
        gateway = internal_ip(cn, by_name.get(name))
        if gateway is None:
            continue
        routes.update(
            NodeRoute(dst=str(ipaddress.ip_network(c)), gateway=gateway) for c in pod_cidrs(cn)
        )
    return routes


def _ipv4(value: object) -> bool:
    try:
        return ipaddress.ip_address(str(value)).version == 4
    except ValueError:
        return False
