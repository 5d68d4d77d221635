"""Well-known filesystem locations, in one place.

Stdlib only (the CNI plugin imports it). A node's runtime directory holds its agent socket,
logs and state; a lab's directory holds the lab record and, with the sqlite backend, the store.
"""

from __future__ import annotations

from pathlib import Path

RUN_ROOT = Path("/var/run/pylium")
"""Runtime root, as Cilium's /var/run/cilium."""

DEFAULT_AGENT_SOCKET = RUN_ROOT / "agent.sock"
"""The agent socket on a real node (one agent per host)."""

BPFFS_ROOT = Path("/sys/fs/bpf/pylium")
"""Pinned maps and links, one directory per node."""

CGROUP_ROOT = Path("/sys/fs/cgroup/unified/pylium")
"""cgroup v2 subtrees of lab nodes (cgroup v2 is mounted at /sys/fs/cgroup/unified here)."""

NETNS_DIR = Path("/var/run/netns")
"""Where `ip netns add` bind-mounts named network namespaces."""

LAB_NETNS_PREFIX = "pyl-"
"""Every network namespace a lab makes is named pyl-<lab>-...; `lab down --force` finds them."""


def node_dir(node: str) -> Path:
    """The runtime directory of a node: agent.sock, agent.log, state/."""
    return RUN_ROOT / node


def agent_socket(node: str) -> Path:
    """The agent socket of a lab node."""
    return node_dir(node) / "agent.sock"


def hubble_socket(node: str) -> Path:
    """The Observer gRPC API (Hubble's) of a node's agent."""
    return node_dir(node) / "hubble.sock"


def relay_socket(lab: str) -> Path:
    """The Observer gRPC API of the lab's relay (every node's flows)."""
    return lab_dir(lab) / "hubble-relay.sock"


def agent_state_dir(node: str) -> Path:
    """Endpoint and IPAM state a restarted agent reads back."""
    return node_dir(node) / "state"


def lab_dir(lab: str) -> Path:
    """The record of one lab (lab.json) and its sqlite store."""
    return RUN_ROOT / "labs" / lab


def bpffs_node_dir(node: str) -> Path:
    """Pins of one node's maps and links."""
    return BPFFS_ROOT / node


def delete_queue_dir(socket: Path) -> Path:
    """CNI DELs that could not reach the agent wait here; the agent drains them at start."""
    return socket.parent / "delete-queue"
