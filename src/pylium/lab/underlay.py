"""The lab's wires: an underlay namespace whose bridge joins every node's uplink, and a world
namespace standing in for the outside (DESIGN §5).

::

    pyl-<lab>-node1  eth0 192.168.64.2 ──┐
    pyl-<lab>-node2  eth0 192.168.64.3 ──┤ br0 in pyl-<lab>-underlay
    pyl-<lab>-world  eth0 192.168.64.1 ──┘
                     outside 203.0.113.1/24 (the "internet")
                     routes LB_POOL and EXTERNAL_IPS via node 1 (it "announces" them)

Nodes reach each other's addresses directly on the bridge; their default route points at the
world namespace. Routes to other nodes' pod CIDRs are the node-routes component's job (native
routing). The world knows no pod CIDR, as a real outside network does not: pod-to-world needs
masquerading. Every address and route lives in lab namespaces only; the root namespace is never
touched.
"""

from __future__ import annotations

import ipaddress
import subprocess

from pylium.lab import netns
from pylium.lab.record import (
    ANNOUNCING_NODE,
    EXTERNAL_IPS,
    LB_POOL,
    UNDERLAY_CIDR,
    UPLINK,
    WORLD_CIDR,
    WORLD_IP,
    WORLD_UNDERLAY_IP,
    LabRecord,
    NodeRecord,
    node_underlay_ip,
    underlay_netns,
    world_netns,
)

BRIDGE = "br0"
OUTSIDE_DEV = "outside"
"""A port-less bridge in the world namespace holding WORLD_CIDR (this kernel has no dummy)."""


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise netns.NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def _prefix() -> int:
    return ipaddress.ip_network(UNDERLAY_CIDR).prefixlen


def create_underlay(lab: LabRecord) -> None:
    """The underlay namespace with its bridge, and the world namespace plugged into it."""
    under = underlay_netns(lab.name)
    netns.create(under)
    _ip("-n", under, "link", "add", BRIDGE, "mtu", str(lab.uplinkMtu), "type", "bridge")
    _ip("-n", under, "link", "set", BRIDGE, "up")
    world = world_netns(lab.name)
    netns.create(world)
    _plug(lab, world, "world", f"{WORLD_UNDERLAY_IP}/{_prefix()}")
    world_prefix = ipaddress.ip_network(WORLD_CIDR).prefixlen
    _ip("-n", world, "link", "add", OUTSIDE_DEV, "type", "bridge")
    _ip("-n", world, "addr", "add", f"{WORLD_IP}/{world_prefix}", "dev", OUTSIDE_DEV)
    _ip("-n", world, "link", "set", OUTSIDE_DEV, "up")
    # The gateway is on-link (the underlay /24) before node 1 exists.
    gateway = node_underlay_ip(ANNOUNCING_NODE)
    for cidr in (LB_POOL, EXTERNAL_IPS):
        _ip("-n", world, "route", "add", cidr, "via", gateway, "dev", UPLINK)


def plug_node(lab: LabRecord, node: NodeRecord, index: int) -> None:
    """Give the node its uplink on the underlay and its default route via the world."""
    _plug(lab, node.netns, f"n{index}", f"{node.underlayIP}/{_prefix()}")
    _ip("-n", node.netns, "route", "add", "default", "via", WORLD_UNDERLAY_IP, "dev", UPLINK)


def _plug(lab: LabRecord, ns: str, port: str, cidr: str) -> None:
    """A veth from the bridge (`port`) to `eth0` in `ns`, with `cidr` on it, both ends up."""
    under = underlay_netns(lab.name)
    mtu = str(lab.uplinkMtu)
    _ip(
        "-n", under, "link", "add", port, "mtu", mtu, "type", "veth",
        "peer", "name", UPLINK, "mtu", mtu, "netns", ns,
    )  # fmt: skip
    _ip("-n", under, "link", "set", port, "master", BRIDGE, "up")
    _ip("-n", ns, "addr", "add", cidr, "dev", UPLINK)
    _ip("-n", ns, "link", "set", UPLINK, "up")
