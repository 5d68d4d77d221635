"""The daemons of a lab node, the agent and the lab kubelet, started inside the node's namespace
with their logs in the node directory; also how to recognise them again by their argv."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from pylium import paths
from pylium.lab import netns, process
from pylium.lab.record import LabRecord, NodeRecord

KUBELET_MODULE = "pylium.lab.kubelet"


def agent_argv(lab: LabRecord, node: NodeRecord) -> list[str]:
    """The agent's command line (run from the venv the running `pylium` belongs to)."""
    return [
        str(Path(sys.executable).parent / "pylium-agent"),
        "--node",
        node.name,
        "--store",
        lab.store,
        "--socket",
        node.agentSocket,
        "--state-dir",
        str(paths.agent_state_dir(node.name)),
        "--mtu",
        str(lab.mtu),
    ]


def kubelet_argv(lab: LabRecord, node: NodeRecord) -> list[str]:
    """The lab kubelet's command line."""
    return [sys.executable, "-m", KUBELET_MODULE, "--lab", lab.name, "--node", node.name]


def is_agent_of(node: str) -> process.Match:
    """Matches the argv of a node's agent (its socket and state live in the node dir)."""
    prefix = f"{paths.node_dir(node)}/"

    def match(argv: list[str]) -> bool:
        return any(a.endswith("/pylium-agent") for a in argv) and any(
            a.startswith(prefix) for a in argv
        )

    return match


def is_kubelet_of(node: str) -> process.Match:
    """Matches the argv of a node's lab kubelet."""

    def match(argv: list[str]) -> bool:
        return KUBELET_MODULE in argv and any(
            a == "--node" and b == node for a, b in itertools.pairwise(argv)
        )

    return match


def start_agent(lab: LabRecord, node: NodeRecord) -> int:
    """Start (or restart) the node's agent; records its pid and command in `node`."""
    node.agentCommand = agent_argv(lab, node)
    node.agentPid = process.start(
        netns.nsenter_argv(node.netns, node.agentCommand), node.dir / "agent.log"
    ).pid
    return node.agentPid


def start_kubelet(lab: LabRecord, node: NodeRecord) -> int:
    """Start (or restart) the node's lab kubelet; records its pid and command in `node`."""
    node.kubeletCommand = kubelet_argv(lab, node)
    node.kubeletPid = process.start(
        netns.nsenter_argv(node.netns, node.kubeletCommand), node.dir / "kubelet.log"
    ).pid
    return node.kubeletPid
