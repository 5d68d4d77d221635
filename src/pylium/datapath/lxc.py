"""The endpoint (lxc) datapath: from-container and to-container with their shared maps.

Per-endpoint data lives in maps (`pylium_lxc` by IP, `pylium_lxc_if` by host-side ifindex), so
one loaded pair of programs serves every endpoint of a node; per-node settings are `.rodata`
constants (bpf/include/config/node.h). `LxcObjects.load` loads both objects sharing one set
of maps (pinned under the node's bpffs directory, or shared in memory without pins).
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from pylium.datapath.closing import Closing
from pylium.datapath.conntrack import Ct4Tuple, CtEntry
from pylium.datapath.loader import OBJ_DIR, Collection, ObjectSpec, Program, load_pair
from pylium.datapath.maps import RawMap
from pylium.datapath.metrics import MetricsKey, MetricsValue

MAP_LXC = "pylium_lxc"
MAP_LXC_IF = "pylium_lxc_if"
MAP_CT4 = "pylium_ct4_global"
MAP_METRICS = "pylium_metrics"
MAP_EVENTS = "pylium_events"
MAP_IPCACHE = "pylium_ipcache4"
MAP_POLICY = "pylium_policy"
MAP_POLICY_EP = "pylium_policy_ep"
MAP_POLICY_CIDR = "pylium_policy_cidr"


class EndpointKey(ctypes.Structure):
    """struct endpoint_key: the endpoint's IPv4 address, network order."""

    _fields_ = [("ip4", ctypes.c_uint8 * 4)]

    @classmethod
    def of(cls, ip: str) -> EndpointKey:
        return cls(ip4=(ctypes.c_uint8 * 4)(*ipaddress.IPv4Address(ip).packed))


class IfindexKey(ctypes.Structure):
    """The u32 ifindex key of pylium_lxc_if."""

    _fields_ = [("ifindex", ctypes.c_uint32)]


class EndpointInfo(ctypes.Structure):
    """struct endpoint_info."""

    _fields_ = [
        ("ifindex", ctypes.c_uint32),
        ("lxc_id", ctypes.c_uint16),
        ("flags", ctypes.c_uint16),
        ("ip4", ctypes.c_uint8 * 4),
        ("mac", ctypes.c_uint8 * 6),
        ("node_mac", ctypes.c_uint8 * 6),
        ("sec_identity", ctypes.c_uint32),
    ]

    @classmethod
    def make(
        cls, ifindex: int, lxc_id: int, ip: str, mac: str, node_mac: str, sec_identity: int = 0
    ) -> EndpointInfo:
        return cls(
            ifindex=ifindex,
            lxc_id=lxc_id,
            ip4=(ctypes.c_uint8 * 4)(*ipaddress.IPv4Address(ip).packed),
            mac=(ctypes.c_uint8 * 6)(*bytes.fromhex(mac.replace(":", ""))),
            node_mac=(ctypes.c_uint8 * 6)(*bytes.fromhex(node_mac.replace(":", ""))),
            sec_identity=sec_identity,
        )


@dataclass(frozen=True)
class NodeConfig:
    """The `.rodata` constants of bpf/include/config/node.h."""

    router_ip: str
    pod_cidr: str
    monitor_aggregation: int = 1
    trace_events: bool = True
    """False: the programs write no trace events (drops still report)."""
    ct_lifetime_tcp: int = 21600
    ct_lifetime_nontcp: int = 60
    ct_syn_timeout: int = 60
    ct_close_timeout: int = 10
    tunnel_ifindex: int = 0
    """The VXLAN device remote-pod traffic goes into (tunnel routing); 0 = native."""

    def constants(self) -> dict[str, int | bytes]:
        cidr = ipaddress.IPv4Network(self.pod_cidr)
        return {
            "router_ip": ipaddress.IPv4Address(self.router_ip).packed,
            "pod_cidr_addr": cidr.network_address.packed,
            "pod_cidr_mask": cidr.netmask.packed,
            "monitor_aggregation": self.monitor_aggregation,
            "trace_events": int(self.trace_events),
            "ct_lifetime_tcp": self.ct_lifetime_tcp,
            "ct_lifetime_nontcp": self.ct_lifetime_nontcp,
            "ct_syn_timeout": self.ct_syn_timeout,
            "ct_close_timeout": self.ct_close_timeout,
            "tunnel_ifindex": self.tunnel_ifindex,
        }


class LxcObjects(Closing):
    """Typed holder of the endpoint programs and maps; closing closes every fd."""

    def __init__(self, from_coll: Collection, to_coll: Collection) -> None:
        self._colls = (from_coll, to_coll)
        self.from_container: Program = from_coll.program("from_container")
        self.to_container: Program = to_coll.program("to_container")
        self.lxc = from_coll.map(MAP_LXC, EndpointKey, EndpointInfo)
        self.lxc_if = from_coll.map(MAP_LXC_IF, IfindexKey, EndpointInfo)
        self.ct4 = from_coll.map(MAP_CT4, Ct4Tuple, CtEntry)
        self.metrics = from_coll.map(MAP_METRICS, MetricsKey, MetricsValue)
        self.events: RawMap = from_coll.maps[MAP_EVENTS]
        self.ipcache: RawMap = from_coll.maps[MAP_IPCACHE]
        self.policy: RawMap = from_coll.maps[MAP_POLICY]
        self.policy_ep: RawMap = from_coll.maps[MAP_POLICY_EP]
        self.policy_cidr: RawMap = from_coll.maps[MAP_POLICY_CIDR]

    @classmethod
    def load(
        cls,
        config: NodeConfig,
        pin_dir: os.PathLike[str] | str | None = None,
        obj_dir: Path = OBJ_DIR,
    ) -> LxcObjects:
        constants = config.constants()
        from_coll, to_coll = load_pair(
            ObjectSpec.from_file(obj_dir / "from_container.o").with_constants(**constants),
            ObjectSpec.from_file(obj_dir / "to_container.o").with_constants(**constants),
            pin_dir,
        )
        return cls(from_coll, to_coll)

    def add_endpoint(self, info: EndpointInfo) -> None:
        """Make an endpoint known to the datapath (both maps)."""
        self.lxc.update(EndpointKey(ip4=info.ip4), info)
        self.lxc_if.update(IfindexKey(ifindex=info.ifindex), info)

    def close(self) -> None:
        for coll in self._colls:
            coll.close()
