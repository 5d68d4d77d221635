"""BPF masquerade and the per-packet service path on the node's uplink: to-netdev and
from-netdev with the NAT map.

to-netdev (tcx egress of the uplink) rewrites the source of pod traffic leaving the cluster to
the node IP and a port of the masquerade range; from-netdev (tcx ingress) translates the
replies back (bpf/lib/nat.h). `pylium_snat_v4_external` (LRU) holds both directions of each
mapping, keyed like conntrack (`Ct4Tuple`, flags 0 = egress, 1 = ingress, as Cilium's
NAT_DIR_* equal TUPLE_F_*). Entries carry an expiry the datapath refreshes per packet;
`gc` deletes a mapping once both its entries expired.

The same programs load-balance traffic from outside to NodePorts, LoadBalancer IPs and
externalIPs (bpf/lib/nodeport.h, `--enable-node-port`, `--enable-external-ips`), with their flow
state in the LRU `pylium_lb4_nodeport` and remote backends' SNAT in the NAT map.

`BpfMasquerade` is the agent component (`--enable-bpf-masquerade`, or a service switch): at
start it loads both programs once for the node with their maps pinned under the node's pin
directory (the endpoint maps, the LB maps and the event ring are shared by name with the
endpoint programs and socket LB), attaches them to the uplink as tcx links pinned under
`<pin_dir>/netdev/`, and on a restart swaps the new programs into those links
(`links.ensure_pinned_tcx`). Mappings survive the restart in the pinned map.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import ipaddress
import logging
import socket
import struct
from contextlib import suppress
from dataclasses import dataclass, field
from enum import IntFlag
from pathlib import Path

from pylium.datapath.bpffs import require_bpffs
from pylium.datapath.closing import Closing
from pylium.datapath.conntrack import Ct4Tuple, TupleFlags, monotonic_seconds
from pylium.datapath.errors import BpfError
from pylium.datapath.lbconfig import LBConfig
from pylium.datapath.links import Direction, ensure_pinned_tcx, remove_pinned
from pylium.datapath.loader import OBJ_DIR, Collection, ObjectSpec, Program, load_pair
from pylium.datapath.maps import Map
from pylium.datapath.overlay import VXLAN_DEVICE

log = logging.getLogger(__name__)

MAP_SNAT = "pylium_snat_v4_external"
LINKS_DIR = "netdev"
"""Sub-directory of the node's pin directory holding the uplink's tcx links."""

PORT_MIN = 61000
PORT_MAX = 65535
"""The default masquerade range: above the kernel's default ephemeral ports (32768-60999), so a
mapping never takes a port one of the node's own sockets may be using (Cilium shares its range
with the node and tracks host connections in the NAT map instead; pylium leaves them alone)."""

_PROTO_ICMP = 1


class NatFlags(IntFlag):
    """nat4_entry.flags."""

    CLOSING = 0x01


class Nat4Entry(ctypes.Structure):
    """struct nat4_entry: where the packet's address and port are translated to."""

    _fields_ = [
        ("to_addr", ctypes.c_uint8 * 4),
        ("to_port", ctypes.c_uint16),
        ("flags", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("lifetime", ctypes.c_uint32),
        ("created", ctypes.c_uint32),
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
    ]


@dataclass(frozen=True)
class NatConfig:
    """The `.rodata` constants of bpf/include/config/masq.h."""

    node_ip: str
    """The masquerade address (the uplink's)."""
    exclude_cidr: str
    """Destinations never masqueraded (ipv4-native-routing-cidr)."""
    port_min: int = PORT_MIN
    port_max: int = PORT_MAX
    masquerade: bool = True
    """Masquerade pod traffic (off: the programs serve the service switches alone)."""
    node_port: bool = False
    """Load-balance NodePorts and LoadBalancer IPs from outside (Cilium's enable-node-port)."""
    external_ips: bool = False
    """Load-balance externalIPs from outside (Cilium's enable-external-ips)."""
    tunnel_ifindex: int = 0
    """The node's VXLAN device (tunnel routing: remote backends are reached through it)."""

    def __post_init__(self) -> None:
        if not 0 < self.port_min <= self.port_max <= 65535:
            raise ValueError(f"masquerade port range {self.port_min}-{self.port_max} is invalid")

    def constants(self) -> dict[str, int | bytes]:
        excluded = ipaddress.IPv4Network(self.exclude_cidr)
        return {
            "enable_masquerade": int(self.masquerade),
            "enable_node_port": int(self.node_port),
            "enable_external_ips": int(self.external_ips),
            "tunnel_ifindex": self.tunnel_ifindex,
            "nat_node_ip": ipaddress.IPv4Address(self.node_ip).packed,
            "nat_exclude_addr": excluded.network_address.packed,
            "nat_exclude_mask": excluded.netmask.packed,
            "nat_port_min": self.port_min,
            "nat_port_max": self.port_max,
        }


class NetdevObjects(Closing):
    """Typed holder of the uplink programs and the NAT map; closing closes every fd."""

    def __init__(self, to_coll: Collection, from_coll: Collection) -> None:
        self._colls = (to_coll, from_coll)
        self.to_netdev: Program = to_coll.program("to_netdev")
        self.from_netdev: Program = from_coll.program("from_netdev")
        self.snat = to_coll.map(MAP_SNAT, Ct4Tuple, Nat4Entry)

    @classmethod
    def load(
        cls,
        config: NatConfig,
        pin_dir: Path | None = None,
        obj_dir: Path = OBJ_DIR,
        lb: LBConfig | None = None,
    ) -> NetdevObjects:
        """Load both programs sharing their maps: pinned by name under `pin_dir` (shared with
        the endpoint programs and socket LB there), else in memory."""
        constants = config.constants()
        lb = lb if lb is not None else LBConfig()
        to_coll, from_coll = load_pair(
            lb.apply(ObjectSpec.from_file(obj_dir / "to_netdev.o").with_constants(**constants)),
            lb.apply(ObjectSpec.from_file(obj_dir / "from_netdev.o").with_constants(**constants)),
            pin_dir,
        )
        return cls(to_coll, from_coll)

    def close(self) -> None:
        for coll in self._colls:
            coll.close()


def reply_key(key: Ct4Tuple, entry: Nat4Entry) -> Ct4Tuple:
    """The ingress key of the mapping whose egress entry is (key, entry) (nat_reply_key)."""
    port = entry.to_port
    return Ct4Tuple(
        saddr=key.daddr,
        daddr=entry.to_addr,
        sport=port if key.nexthdr == _PROTO_ICMP else key.dport,
        dport=port,
        nexthdr=key.nexthdr,
        flags=TupleFlags.IN,
    )


def gc(snat: Map[Ct4Tuple, Nat4Entry], now: int | None = None) -> int:
    """Delete mappings whose entries have all expired; returns how many entries went.

    A pair goes together (the egress entry alone would let the port be handed out again while
    the outside still answers on it). An ingress entry whose egress entry the LRU evicted goes
    once expired. Keys are collected before any delete; each is re-checked before deletion, as
    a packet may have refreshed it since the scan.
    """
    now = monotonic_seconds() if now is None else now
    entries = {bytes(k): (k, v) for k, v in snat.items()}
    paired: set[bytes] = set()
    stale: list[Ct4Tuple] = []
    for key, entry in entries.values():
        if key.flags != TupleFlags.OUT:
            continue
        rkey = reply_key(key, entry)
        paired.add(bytes(rkey))
        reply = entries.get(bytes(rkey))
        if entry.lifetime < now and (reply is None or reply[1].lifetime < now):
            stale.append(key)
            if reply is not None:
                stale.append(rkey)
    stale += [
        key
        for raw, (key, entry) in entries.items()
        if key.flags == TupleFlags.IN and raw not in paired and entry.lifetime < now
    ]
    deleted = 0
    for key in stale:
        current = snat.get(key)
        if current is not None and current.lifetime < now:
            snat.delete(key, missing_ok=True)
            deleted += 1
    return deleted


def uplink_address(ifname: str) -> tuple[int, str]:
    """The ifindex and primary IPv4 address of `ifname` (in the calling thread's netns)."""
    ifindex = socket.if_nametoindex(ifname)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            req = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", ifname.encode()))
        except OSError as err:
            raise OSError(err.errno, f"{ifname} has no IPv4 address to masquerade to") from err
    return ifindex, socket.inet_ntoa(req[20:24])


_SIOCGIFADDR = 0x8915


@dataclass(frozen=True)
class MasqueradeParams:
    """Settings of BPF masquerading (Cilium's enable-bpf-masquerade)."""

    pin_dir: Path
    """The node's bpffs directory, shared with the endpoint datapath."""
    uplink: str
    """The device traffic leaves the node by (its address is the masquerade address)."""
    native_routing_cidr: str
    """Destinations reached without masquerading: every pod of the cluster."""
    port_min: int = PORT_MIN
    port_max: int = PORT_MAX
    gc_interval: float = 30.0
    """Seconds between NAT map garbage collections."""
    masquerade: bool = True
    node_port: bool = False
    external_ips: bool = False
    tunnel: bool = False
    """Tunnel routing: the VXLAN device exists (the endpoint datapath made it) and carries the
    service path's traffic to remote backends."""
    lb: LBConfig = field(default_factory=LBConfig)
    """The service switches and LB settings (`NatConfig`, `LBConfig`)."""


class BpfMasquerade:
    """The uplink programs, attached while the agent runs and pinned to outlive it."""

    def __init__(self, params: MasqueradeParams) -> None:
        ipaddress.IPv4Network(params.native_routing_cidr)  # fail at construction, not start
        self._params = params
        self._objs: NetdevObjects | None = None
        self._gc_task: asyncio.Task[None] | None = None
        self.node_ip: str | None = None

    @property
    def links_dir(self) -> Path:
        return self._params.pin_dir / LINKS_DIR

    def link_pin(self, direction: Direction) -> Path:
        """Where the uplink's link of one direction is pinned."""
        return self.links_dir / f"{self._params.uplink}_{direction.value}"

    @property
    def objs(self) -> NetdevObjects:
        if self._objs is None:
            raise RuntimeError("masquerade used before start()")
        return self._objs

    async def start(self) -> None:
        p = self._params
        require_bpffs(p.pin_dir)
        ifindex, self.node_ip = uplink_address(p.uplink)
        config = NatConfig(
            self.node_ip,
            p.native_routing_cidr,
            p.port_min,
            p.port_max,
            masquerade=p.masquerade,
            node_port=p.node_port,
            external_ips=p.external_ips,
            tunnel_ifindex=socket.if_nametoindex(VXLAN_DEVICE) if p.tunnel else 0,
        )
        self._objs = NetdevObjects.load(config, pin_dir=p.pin_dir, lb=p.lb)
        self.links_dir.mkdir(exist_ok=True)
        # In this thread, not a worker's: the ifindex is only valid in this thread's netns
        # (tests enter it per thread); two attaches once per start are worth the ~25 ms.
        self._attach(ifindex)
        log.info(
            "uplink %s: masquerade %s, node port %s, external IPs %s",
            p.uplink,
            p.masquerade,
            p.node_port,
            p.external_ips,
        )
        log.info(
            "NAT to %s on %s (ports %d-%d), except to %s",
            self.node_ip,
            p.uplink,
            p.port_min,
            p.port_max,
            p.native_routing_cidr,
        )
        self.gc()
        self._gc_task = asyncio.create_task(self._gc_loop(), name="nat-gc")

    def _attach(self, ifindex: int) -> None:
        programs = {Direction.EGRESS: self.objs.to_netdev, Direction.INGRESS: self.objs.from_netdev}
        for direction, program in programs.items():
            ensure_pinned_tcx(self.link_pin(direction), ifindex, program, direction)

    async def stop(self) -> None:
        """Stop the GC and close fds; the pinned links keep masquerading."""
        if self._gc_task is not None:
            self._gc_task.cancel()
            with suppress(asyncio.CancelledError):
                await self._gc_task
            self._gc_task = None
        if self._objs is not None:
            self._objs.close()
            self._objs = None

    def gc(self) -> int:
        """Delete expired mappings now; returns how many entries went."""
        deleted = gc(self.objs.snat)
        if deleted:
            log.info("NAT GC deleted %d expired entries", deleted)
        return deleted

    async def _gc_loop(self) -> None:
        while True:
            await asyncio.sleep(self._params.gc_interval)
            try:
                self.gc()
            except BpfError:
                log.exception("NAT garbage collection failed")


def remove_masquerade(pin_dir: Path, uplink: str) -> None:
    """Detach and unpin the uplink's links (masquerading turned off since the last run)."""
    for direction in Direction:
        pin = pin_dir / LINKS_DIR / f"{uplink}_{direction.value}"
        if pin.exists():
            remove_pinned(pin)
