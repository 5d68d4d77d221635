"""A lab node's CNI set-up: the bin dir (CNI_PATH) and the conflist its kubelet runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pylium.lab.record import NodeRecord

CONFLIST_FILE = "05-pylium.conflist"
NETWORK_NAME = "pylium"
CNI_VERSION = "1.0.0"
REFERENCE_PLUGINS = Path("/usr/lib/cni")
"""containernetworking-plugins from Debian; the lab chains `portmap` and links `loopback`."""


def conflist(agent_socket: str, mtu: int) -> dict[str, Any]:
    """The node's network: pylium-cni (talking to the node's agent), then portmap."""
    return {
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [
            {"type": "pylium-cni", "agentSocket": agent_socket, "mtu": mtu},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def install(node: NodeRecord, mtu: int) -> None:
    """Write the node's bin dir links and its conflist.

    Raises:
        FileNotFoundError: a plugin to link is not installed.
    """
    bin_dir = Path(node.cniBinDir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    links = {
        # The pylium-cni script installed next to the running interpreter (the venv's).
        "pylium-cni": Path(sys.executable).parent / "pylium-cni",
        "loopback": REFERENCE_PLUGINS / "loopback",
        "portmap": REFERENCE_PLUGINS / "portmap",
    }
    for name, target in links.items():
        if not target.exists():
            hint = "" if name == "pylium-cni" else " (apt-get install containernetworking-plugins)"
            raise FileNotFoundError(f"CNI plugin {target} is missing{hint}")
        link = bin_dir / name
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    conf_dir = Path(node.cniConfDir)
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / CONFLIST_FILE).write_text(json.dumps(conflist(node.agentSocket, mtu), indent=2))
