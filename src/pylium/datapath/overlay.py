"""Tunnel routing: the node's VXLAN device, the programs on it and the node's routes into it.

One `pylium_vxlan` device per node (Cilium's cilium_vxlan), in collect-metadata (`external`)
mode on UDP 8472, with ARP and IPv6 off: from-container sets each packet's tunnel key (remote
node from the ipcache, VNI = source identity) and redirects it here; received packets arrive
decapsulated with their key, and `from_overlay` (bpf/overlay.c) on tcx ingress delivers them
to the local endpoint with the identity. The device's MTU is the pods' (the uplink's less the
50 bytes of VXLAN over IPv4), so what a pod sends always fits the underlay once encapsulated.

The node's own traffic to remote pods (`TunnelRoutes`: every other node's pod CIDR via the
device, from the router IP so answers come back through the tunnel) gets its key from
`to_overlay` on tcx egress.

The links are pinned as `<pin_dir>/overlay_{ingress,egress}`: a restarted agent swaps its new
programs in.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from ipaddress import IPv4Network
from pathlib import Path

from pyroute2 import IPRoute, NetlinkError

from pylium.datapath.links import Direction, ensure_pinned_tcx
from pylium.datapath.loader import OBJ_DIR, Collection, ObjectSpec, Program
from pylium.datapath.lxc import NodeConfig

log = logging.getLogger(__name__)

VXLAN_DEVICE = "pylium_vxlan"
VXLAN_PORT = 8472
"""Linux's (and Cilium's) VXLAN port, not IANA's 4789."""
TUNNEL_OVERHEAD = 50
"""Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) bytes."""
OVERLAY_LINK_PINS = {Direction.INGRESS: "overlay_ingress", Direction.EGRESS: "overlay_egress"}
IFF_NOARP = 0x80


def ensure_vxlan(mtu: int) -> int:
    """Create (or find) the VXLAN device in this thread's netns, up; returns its ifindex."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=VXLAN_DEVICE)
        if not found:
            ipr.link(
                "add",
                ifname=VXLAN_DEVICE,
                kind="vxlan",
                vxlan_collect_metadata=1,
                vxlan_port=VXLAN_PORT,
                vxlan_learning=0,
            )
            found = ipr.link_lookup(ifname=VXLAN_DEVICE)
            log.info("created %s (collect metadata, port %d)", VXLAN_DEVICE, VXLAN_PORT)
        index = int(found[0])
        # No ARP on the tunnel: the overlay program rewrites the inner MACs on arrival.
        ipr.link("set", index=index, mtu=mtu, flags=IFF_NOARP, change=IFF_NOARP)
        # Nothing but IPv4 can be tunnelled: no IPv6 autoconfiguration chatter into it.
        ipv6 = Path(f"/proc/sys/net/ipv6/conf/{VXLAN_DEVICE}/disable_ipv6")
        if ipv6.exists():
            ipv6.write_text("1")
        ipr.link("set", index=index, state="up")
        return index


class Overlay:
    """The loaded overlay programs, attached to the VXLAN device."""

    def __init__(self, coll: Collection) -> None:
        self._coll = coll
        self.programs: dict[Direction, Program] = {
            Direction.INGRESS: coll.program("from_overlay"),
            Direction.EGRESS: coll.program("to_overlay"),
        }

    @classmethod
    def load(
        cls, config: NodeConfig, pin_dir: os.PathLike[str] | str, obj_dir: Path = OBJ_DIR
    ) -> Overlay:
        """Load bpf/overlay.c sharing the node's pinned maps (endpoints, events, metrics)."""
        spec = ObjectSpec.from_file(obj_dir / "overlay.o").with_constants(**config.constants())
        return cls(spec.load(pin_dir=pin_dir))

    def attach(self, ifindex: int, pin_dir: Path) -> None:
        """Attach both programs to the device (a restarted agent swaps into its pinned links)."""
        for direction, program in self.programs.items():
            ensure_pinned_tcx(pin_dir / OVERLAY_LINK_PINS[direction], ifindex, program, direction)

    def close(self) -> None:
        self._coll.close()


class TunnelRoutes:
    """The node's routes to the other nodes' pod CIDRs through the VXLAN device.

    `sync` makes the device's routes exactly `cidrs` (the first call also removes what an
    earlier agent left that no longer holds). Routes stay when the agent stops, as the links
    do: the node keeps reaching remote pods during a restart.
    """

    def __init__(self, ifindex: int, router_ip: str, mtu: int) -> None:
        self._ifindex = ifindex
        self._router_ip = router_ip
        self._mtu = mtu
        self.applied: set[IPv4Network] | None = None
        """The routes in place (None until the first sync read the kernel's)."""

    def sync(self, cidrs: set[IPv4Network]) -> None:
        """Blocking (netlink): run it in a thread of the node's netns."""
        with IPRoute() as ipr:
            if self.applied is None:
                self.applied = {
                    IPv4Network(f"{r.get('dst')}/{r['dst_len']}")
                    for r in ipr.route("dump", family=socket.AF_INET, oif=self._ifindex)
                    if r.get("dst") and r["dst_len"] < 32
                }
            for cidr in sorted(cidrs - self.applied):
                ipr.route(
                    "replace",
                    dst=str(cidr),
                    oif=self._ifindex,
                    prefsrc=self._router_ip,
                    metrics={"mtu": self._mtu},
                )
                self.applied.add(cidr)
            for cidr in sorted(self.applied - cidrs):
                with contextlib.suppress(NetlinkError):  # already gone is success
                    ipr.route("del", dst=str(cidr), oif=self._ifindex)
                self.applied.discard(cidr)
