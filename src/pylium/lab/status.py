"""`pylium lab status`: each node's record plus whether its daemons run and answer."""

from __future__ import annotations

from typing import Any

from pylium.lab import daemons, process
from pylium.lab.health import agent_health
from pylium.lab.record import LabRecord


def status(lab: LabRecord) -> dict[str, Any]:
    """The stable `-o json` form of a lab's status."""
    nodes = []
    for node in lab.nodes:
        agent_running = process.alive(node.agentPid, daemons.is_agent_of(node.name))
        nodes.append(
            {
                "name": node.name,
                "netns": node.netns,
                "agentSocket": node.agentSocket,
                "cniConfDir": node.cniConfDir,
                "cniBinDir": node.cniBinDir,
                "podCIDR": node.podCIDR,
                "cgroup": node.cgroup,
                "agentPid": node.agentPid,
                "agentRunning": agent_running,
                "health": agent_health(node.agentSocket) if agent_running else "agent not running",
                "kubeletPid": node.kubeletPid,
                "kubeletRunning": process.alive(node.kubeletPid, daemons.is_kubelet_of(node.name)),
            }
        )
    return {"name": lab.name, "store": lab.store, "nodes": nodes}
