"""Tunnel routing: the node's VXLAN device and the program on its ingress.

One `pylium_vxlan` device per node (Cilium's cilium_vxlan), in collect-metadata (`external`)
mode on UDP 8472, with ARP off: from-container sets each packet's tunnel key (remote node from
the ipcache, VNI = source identity) and redirects it here; received packets arrive
decapsulated with their key, and `from_overlay` (bpf/overlay.c) on tcx ingress delivers them
to the local endpoint with the identity. The device's MTU is the pods' (the uplink's less the
50 bytes of VXLAN over IPv4), so what a pod sends always fits the underlay once encapsulated.

The link is pinned as `<pin_dir>/overlay_ingress`: a restarted agent swaps its new program in.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pyroute2 import IPRoute

from pylium.datapath.links import Direction, ensure_pinned_tcx
from pylium.datapath.loader import OBJ_DIR, Collection, ObjectSpec, Program
from pylium.datapath.lxc import NodeConfig

log = logging.getLogger(__name__)

VXLAN_DEVICE = "pylium_vxlan"
VXLAN_PORT = 8472
"""Linux's (and Cilium's) VXLAN port, not IANA's 4789."""
TUNNEL_OVERHEAD = 50
"""Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) bytes."""
OVERLAY_LINK_PIN = "overlay_ingress"
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
        ipr.link("set", index=index, state="up")
        return index


class Overlay:
    """The loaded overlay program, attached to the VXLAN device."""

    def __init__(self, coll: Collection) -> None:
        self._coll = coll
        self.program: Program = coll.program("from_overlay")

    @classmethod
    def load(
        cls, config: NodeConfig, pin_dir: os.PathLike[str] | str, obj_dir: Path = OBJ_DIR
    ) -> Overlay:
        """Load bpf/overlay.c sharing the node's pinned maps (endpoints, events, metrics)."""
        spec = ObjectSpec.from_file(obj_dir / "overlay.o").with_constants(**config.constants())
        return cls(spec.load(pin_dir=pin_dir))

    def attach(self, ifindex: int, pin: Path) -> None:
        """Attach to the device's ingress (a restarted agent swaps into its pinned link)."""
        ensure_pinned_tcx(pin, ifindex, self.program, Direction.INGRESS)

    def close(self) -> None:
        self._coll.close()
