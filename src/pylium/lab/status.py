"""`pylium lab status`: the lab's settings and daemons, and each node's record plus whether its
daemons run and answer."""

from __future__ import annotations

from typing import Any

from pylium import paths
from pylium.hubble.ui import read_ui_url
from pylium.lab import daemons, process, record
from pylium.lab.health import agent_health, flow_status
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
                "underlayIP": node.underlayIP,
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
                "hubbleSocket": str(paths.hubble_socket(node.name)),
                "hubbleAddress": node.hubble_address,
                "metricsAddress": node.metrics_address,
                "flows": flow_status(node.agentSocket) if agent_running else None,
            }
        )
    pids = lab.daemon_pids()
    lab_daemons = {
        what: {"pid": pids[what], "running": process.alive(pids[what], match)}
        for what, match in daemons.lab_daemons(lab.name).items()
        if pids[what] is not None
    }
    return {
        "name": lab.name,
        "store": lab.store,
        "routing": lab.routing,
        "mtu": lab.mtu,
        "uplinkMtu": lab.uplinkMtu,
        "underlay": {"netns": record.underlay_netns(lab.name), "cidr": record.UNDERLAY_CIDR},
        "world": {"netns": record.world_netns(lab.name), "ip": record.WORLD_IP},
        "daemons": lab_daemons,
        "relay": {"socket": str(paths.relay_socket(lab.name))},
        "ui": read_ui_url(lab.name),
        "nodes": nodes,
    }
