"""The lab record: what `pylium lab up` made, so status, exec and down can find it again.

`/var/run/pylium/labs/<lab>/lab.json` names the store, the routing mode, the lab-wide daemons
(scheduler, world server, Hubble relay, etcd proxy) and, per node, its namespace, underlay
address, agent socket, CNI directories, pod CIDR, cgroup and the pids of its agent and lab
kubelet.

Addresses: the underlay is UNDERLAY_CIDR inside the lab's own namespaces only (each lab has its
own underlay namespace, so labs may reuse it); the world namespace holds WORLD_UNDERLAY_IP (the
nodes' default gateway) and WORLD_CIDR, the lab's stand-in for the outside.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from pylium import paths, statefile

LAB_FILE = "lab.json"
DEFAULT_MTU = 1500
STORE_FILE = "store.db"

Routing = Literal["native", "tunnel"]
ROUTING_MODES: tuple[Routing, ...] = ("native", "tunnel")
KubeProxyMode = Literal["iptables", "nftables"]
KUBE_PROXY_MODES: tuple[KubeProxyMode, ...] = ("iptables", "nftables")
TUNNEL_OVERHEAD = 50
"""Bytes VXLAN adds (outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14)."""

UNDERLAY_CIDR = "192.168.64.0/24"
"""The lab's underlay: node i is .(i+1), the world namespace .1."""
WORLD_UNDERLAY_IP = "192.168.64.1"
WORLD_CIDR = "203.0.113.0/24"
"""The "outside" (TEST-NET-3), held by the world namespace only."""
WORLD_IP = "203.0.113.1"
WORLD_SERVER_PORTS = (80, 53)
"""TCP 80 and UDP 53 on WORLD_IP answer "world"."""
UPLINK = "eth0"
"""A node's uplink into the underlay."""
HUBBLE_PORT = 4244
"""Each agent's Observer gRPC API on its underlay address (Hubble's port)."""
METRICS_PORT = 9962
"""Each agent's Prometheus /metrics on its underlay address (Cilium's port)."""


def pod_mtu(routing: Routing, uplink_mtu: int) -> int:
    """Pod interface MTU: the uplink's in native routing, less the VXLAN overhead in tunnel."""
    return uplink_mtu - TUNNEL_OVERHEAD if routing == "tunnel" else uplink_mtu


def node_name(lab: str, index: int) -> str:
    """Node i of a lab: `<lab>-node<i>`."""
    return f"{lab}-node{index}"


def node_netns(lab: str, index: int) -> str:
    """The network namespace of node i."""
    return f"{paths.LAB_NETNS_PREFIX}{lab}-node{index}"


def underlay_netns(lab: str) -> str:
    """The namespace whose bridge joins the nodes' uplinks."""
    return f"{paths.LAB_NETNS_PREFIX}{lab}-underlay"


def world_netns(lab: str) -> str:
    """The namespace standing in for the outside."""
    return f"{paths.LAB_NETNS_PREFIX}{lab}-world"


def node_underlay_ip(index: int) -> str:
    """Node i's address on the underlay."""
    return str(ipaddress.ip_network(UNDERLAY_CIDR)[index + 1])


def pod_netns(lab: str, namespace: str, pod: str) -> str:
    """A pod's network namespace: `pyl-<lab>-p-<hash of namespace/name>`."""
    digest = hashlib.sha256(f"{namespace}/{pod}".encode()).hexdigest()[:10]
    return f"{paths.LAB_NETNS_PREFIX}{lab}-p-{digest}"


def netns_pattern(lab: str) -> re.Pattern[str]:
    """Matches the names of every namespace of one lab (nodes, pods, underlay, world), and no
    other lab's."""
    return re.compile(
        rf"{re.escape(paths.LAB_NETNS_PREFIX + lab)}-(node\d+|p-[0-9a-f]{{10}}|underlay|world)"
    )


def node_pattern(lab: str) -> re.Pattern[str]:
    """Matches the names of the lab's nodes."""
    return re.compile(rf"{re.escape(lab)}-node\d+")


CLUSTER_POOL = "10.244.0.0/16"
"""The pods' addresses; the operator hands each node a /POD_CIDR_MASK of it."""
POD_CIDR_MASK = 24
SERVICE_CIDR = "10.96.0.0/16"
"""ClusterIPs (the operator's and the CLI's default, kube-apiserver's usual range)."""
LB_POOL = "198.51.100.0/24"
"""LoadBalancer IPs (the operator's `--lb-pool`): TEST-NET-2, lab-only like the world's
TEST-NET-3 but outside WORLD_CIDR, which the world namespace holds on-link (an LB IP inside it
could never be routed to a node)."""
EXTERNAL_IPS = "192.0.2.0/24"
"""Where tests and the connectivity test take Services' `externalIPs` from: TEST-NET-1, lab-only
like LB_POOL. The world routes both ranges to node 1 (underlay.create_underlay)."""
ANNOUNCING_NODE = 1
"""The node the world sends LB_POOL and EXTERNAL_IPS traffic to, as if it alone answered for
them (Cilium's L2 announcements elect one node per address; the lab keeps it fixed)."""


def store_url(lab: str, store: str = "sqlite") -> str:
    """The store every process of the lab shares: `sqlite` is a file in the lab dir; an
    `etcd://HOST:PORT` URL gets the lab's own key root (`etcd://HOST:PORT/<lab>`)."""
    if store == "sqlite":
        return f"sqlite://{paths.lab_dir(lab) / STORE_FILE}"
    return f"{store.rstrip('/')}/{lab}"


def cgroup_dir(lab: str, node: str) -> Path:
    """The cgroup v2 subtree of a node's pods (DESIGN §5)."""
    return paths.CGROUP_ROOT / lab / node


def cni_bin_dir(node: str) -> Path:
    """The node's CNI_PATH: links to pylium-cni and the reference plugins it chains."""
    return paths.node_dir(node) / "cni" / "bin"


def cni_conf_dir(node: str) -> Path:
    """The node's CNI configuration directory (the conflist the kubelet reads)."""
    return paths.node_dir(node) / "cni" / "net.d"


def kubelet_dir(node: str) -> Path:
    """The lab kubelet's runtime state: per-pod state and the CNI result cache."""
    return paths.node_dir(node) / "kubelet"


@dataclass
class NodeRecord:
    """One lab node and the daemons running for it (camelCase: the lab.json field names)."""

    name: str
    netns: str
    agentSocket: str
    cniConfDir: str
    cniBinDir: str
    podCIDR: str
    """As the operator assigned it ("" until then)."""
    cgroup: str
    underlayIP: str = ""
    agentPid: int | None = None
    kubeletPid: int | None = None
    agentCommand: list[str] = field(default_factory=list)
    kubeletCommand: list[str] = field(default_factory=list)

    @property
    def dir(self) -> Path:
        """The node's runtime directory."""
        return paths.node_dir(self.name)

    @property
    def netns_path(self) -> Path:
        """The bind mount of the node's namespace."""
        return paths.NETNS_DIR / self.netns

    @property
    def hubble_address(self) -> str:
        """The agent's Observer gRPC API inside the lab (reachable from the node namespaces)."""
        return f"{self.underlayIP}:{HUBBLE_PORT}"

    @property
    def metrics_address(self) -> str:
        """The agent's /metrics inside the lab (reachable from the node namespaces)."""
        return f"{self.underlayIP}:{METRICS_PORT}"


@dataclass
class LabRecord:
    """A lab: its name, its store and its nodes."""

    name: str
    store: str
    nodes: list[NodeRecord] = field(default_factory=list)
    mtu: int = DEFAULT_MTU
    """Pod interface MTU, given to every agent and conflist."""
    routing: Routing = "native"
    kubeProxyReplacement: bool = True
    """Services in eBPF (socket LB); False: the agents run kube-proxy's `kubeProxyMode`."""
    kubeProxyMode: KubeProxyMode = "iptables"
    bpfLbSock: bool | None = None
    enableNodePort: bool | None = None
    enableExternalIps: bool | None = None
    """The agents' per-feature switches (`agent.lbfeatures`); None: as kubeProxyReplacement."""
    uplinkMtu: int = DEFAULT_MTU
    """MTU of the underlay (every node's uplink)."""
    operatorPid: int | None = None
    schedulerPid: int | None = None
    worldServerPid: int | None = None
    storeProxyPid: int | None = None
    """Forwards the nodes' loopback etcd port to the root namespace's (etcd stores only)."""
    relayPid: int | None = None
    """The Hubble relay: every node's flows on `paths.relay_socket(name)`."""

    @classmethod
    def new(
        cls,
        lab: str,
        node_count: int,
        uplink_mtu: int = DEFAULT_MTU,
        routing: Routing = "native",
        store: str = "sqlite",
    ) -> LabRecord:
        """The record of a lab about to be made, with every path filled in."""
        nodes = []
        for i in range(1, node_count + 1):
            name = node_name(lab, i)
            nodes.append(
                NodeRecord(
                    name=name,
                    netns=node_netns(lab, i),
                    agentSocket=str(paths.agent_socket(name)),
                    cniConfDir=str(cni_conf_dir(name)),
                    cniBinDir=str(cni_bin_dir(name)),
                    podCIDR="",  # the operator's choice, filled in by `up`
                    cgroup=str(cgroup_dir(lab, name)),
                    underlayIP=node_underlay_ip(i),
                )
            )
        return cls(
            name=lab,
            store=store_url(lab, store),
            nodes=nodes,
            mtu=pod_mtu(routing, uplink_mtu),
            routing=routing,
            uplinkMtu=uplink_mtu,
        )

    def node(self, name: str) -> NodeRecord:
        """The node of that name; KeyError if the lab has none."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"lab {self.name!r} has no node {name!r}")

    def daemon_pids(self) -> dict[str, int | None]:
        """Lab-wide daemon name -> its recorded pid (the names of `daemons.lab_daemons`)."""
        return {
            "operator": self.operatorPid,
            "scheduler": self.schedulerPid,
            "world server": self.worldServerPid,
            "store proxy": self.storeProxyPid,
            "hubble relay": self.relayPid,
        }

    def to_json(self) -> dict[str, Any]:
        """The record as stored in lab.json."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabRecord:
        """Parse lab.json."""
        # fields a newer or older pylium wrote are ignored, so `down` works across upgrades
        known = {f.name for f in fields(NodeRecord)}
        nodes = [
            NodeRecord(**{k: v for k, v in n.items() if k in known}) for n in data.get("nodes", [])
        ]
        routing = data.get("routing", "native")
        if routing not in ROUTING_MODES:
            raise ValueError(f"lab record: unknown routing mode {routing!r}")
        kube_proxy_mode = data.get("kubeProxyMode", "iptables")
        if kube_proxy_mode not in KUBE_PROXY_MODES:
            raise ValueError(f"lab record: unknown kube-proxy mode {kube_proxy_mode!r}")
        return cls(
            name=data["name"],
            store=data["store"],
            nodes=nodes,
            mtu=int(data.get("mtu", DEFAULT_MTU)),
            routing=routing,
            kubeProxyReplacement=bool(data.get("kubeProxyReplacement", True)),
            kubeProxyMode=kube_proxy_mode,
            bpfLbSock=data.get("bpfLbSock"),
            enableNodePort=data.get("enableNodePort"),
            enableExternalIps=data.get("enableExternalIps"),
            uplinkMtu=int(data.get("uplinkMtu", DEFAULT_MTU)),
            operatorPid=data.get("operatorPid"),
            schedulerPid=data.get("schedulerPid"),
            worldServerPid=data.get("worldServerPid"),
            storeProxyPid=data.get("storeProxyPid"),
            relayPid=data.get("relayPid"),
        )


def record_path(lab: str) -> Path:
    """Where a lab's record lives."""
    return paths.lab_dir(lab) / LAB_FILE


def load(lab: str) -> LabRecord | None:
    """The lab's record, or None when the lab does not exist."""
    try:
        data = statefile.read_json(record_path(lab))
    except FileNotFoundError:
        return None
    return LabRecord.from_json(data)


def save(record: LabRecord) -> None:
    """Write the record atomically (readers never see half a file)."""
    statefile.write_json(record_path(record.name), record.to_json())
