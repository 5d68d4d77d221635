"""The lab record: what `pylium lab up` made, so status, exec and down can find it again.

`/var/run/pylium/labs/<lab>/lab.json` names the store and, per node, its namespace, agent
socket, CNI directories, pod CIDR, cgroup and the pids of its agent and lab kubelet.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pylium import paths, statefile

LAB_FILE = "lab.json"
DEFAULT_MTU = 1500
STORE_FILE = "store.db"


def node_name(lab: str, index: int) -> str:
    """Node i of a lab: `<lab>-node<i>`."""
    return f"{lab}-node{index}"


def node_netns(lab: str, index: int) -> str:
    """The network namespace of node i."""
    return f"{paths.LAB_NETNS_PREFIX}{lab}-node{index}"


def pod_netns(lab: str, namespace: str, pod: str) -> str:
    """A pod's network namespace: `pyl-<lab>-p-<hash of namespace/name>`."""
    digest = hashlib.sha256(f"{namespace}/{pod}".encode()).hexdigest()[:10]
    return f"{paths.LAB_NETNS_PREFIX}{lab}-p-{digest}"


def netns_pattern(lab: str) -> re.Pattern[str]:
    """Matches the names of every namespace of one lab (nodes and pods), and no other lab's."""
    return re.compile(rf"{re.escape(paths.LAB_NETNS_PREFIX + lab)}-(node\d+|p-[0-9a-f]{{10}})")


def node_pattern(lab: str) -> re.Pattern[str]:
    """Matches the names of the lab's nodes."""
    return re.compile(rf"{re.escape(lab)}-node\d+")


def node_pod_cidr(index: int) -> str:
    """The pod CIDR of node i (10.244.i.0/24), as the operator would hand out."""
    return f"10.244.{index}.0/24"


def store_url(lab: str) -> str:
    """The sqlite store every process of the lab shares."""
    return f"sqlite://{paths.lab_dir(lab) / STORE_FILE}"


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
    cgroup: str
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


@dataclass
class LabRecord:
    """A lab: its name, its store and its nodes."""

    name: str
    store: str
    nodes: list[NodeRecord] = field(default_factory=list)
    mtu: int = DEFAULT_MTU
    """Pod interface MTU, given to every agent and conflist."""

    @classmethod
    def new(cls, lab: str, node_count: int, mtu: int = DEFAULT_MTU) -> LabRecord:
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
                    podCIDR=node_pod_cidr(i),
                    cgroup=str(cgroup_dir(lab, name)),
                )
            )
        return cls(name=lab, store=store_url(lab), nodes=nodes, mtu=mtu)

    def node(self, name: str) -> NodeRecord:
        """The node of that name; KeyError if the lab has none."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"lab {self.name!r} has no node {name!r}")

    def to_json(self) -> dict[str, Any]:
        """The record as stored in lab.json."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabRecord:
        """Parse lab.json."""
        nodes = [NodeRecord(**n) for n in data.get("nodes", [])]
        return cls(
            name=data["name"],
            store=data["store"],
            nodes=nodes,
            mtu=int(data.get("mtu", DEFAULT_MTU)),
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
