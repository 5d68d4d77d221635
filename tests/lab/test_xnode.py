"""Many nodes on etcd: a 3-node lab on an etcd store passes `pylium connectivity test` in native
and in tunnel mode; in it, a TCP stream and a UDP loop between pods on two nodes survive the
sender's and then the receiver's agent being SIGKILLed and restarted; a Node deleted from the
store gives its pod CIDR back to the operator, which hands it to the next node.

One etcd for the module; the two labs (one per routing mode) run one after the other."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from pylium import paths
from pylium.lab import record
from tests.datapath.agent.test_datapath import finish, traffic
from tests.lab.conftest import apply, leftovers, pylium, store_get, unique_lab
from tests.lab.test_etcd_lab import etcd
from tests.lab.test_routing_identity import connectivity, load
from tests.support import wait_for
from tests.unit.store.etcd_server import EtcdServer

pytestmark = pytest.mark.root

__all__ = ["etcd"]  # the module's etcd fixture, shared with test_etcd_lab

NODES = 3
TEST_NAMESPACE = "pylium-test"
"""Where `pylium connectivity test` leaves its pods."""


@pytest.fixture(scope="module", params=["native", "tunnel"])
def etcd_lab(request: pytest.FixtureRequest, etcd: EtcdServer) -> Iterator[str]:
    """A 3-node lab on the module's etcd, in the routing mode of the parameter."""
    name = unique_lab()
    try:
        pylium(
            "lab", "up", "--name", name, "--nodes", str(NODES), "--routing", request.param,
            "--store", etcd.url(),
        )  # fmt: skip
        yield name
    finally:
        pylium("lab", "down", "--name", name, "--force", check=False)
        assert leftovers(name) == {}


def test_a_three_node_etcd_lab_passes_the_connectivity_test(etcd_lab: str) -> None:
    assert load(etcd_lab).store.startswith("etcd://")
    statuses = connectivity(etcd_lab)
    assert {"pod-to-pod-other-node", "pod-to-service", "pod-to-world"} <= set(statuses)
    assert statuses == dict.fromkeys(statuses, "passed")


def _node_of(lab: str, pod: str) -> str:
    found = store_get(lab, "Pod", pod, TEST_NAMESPACE)
    assert found is not None, pod
    return str(found["spec"]["nodeName"])


def _kill_and_restart_agent(lab: str, node: str) -> None:
    """SIGKILL the node's agent (no clean stop), then `pylium lab restart agent` it."""
    pid = load(lab).node(node).agentPid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    pylium("--lab", lab, "lab", "restart", "agent", "--node", node)


def test_agents_killed_mid_traffic_lose_no_cross_node_connection(etcd_lab: str) -> None:
    connectivity(etcd_lab)  # its client and echo-other-node pods run on two nodes
    client, server = "client", "echo-other-node"
    sender_node, receiver_node = _node_of(etcd_lab, client), _node_of(etcd_lab, server)
    assert sender_node != receiver_node
    found = store_get(etcd_lab, "Pod", server, TEST_NAMESPACE)
    assert found is not None
    server_ip = found["status"]["podIP"]
    netns = {
        p: str(paths.NETNS_DIR / record.pod_netns(etcd_lab, TEST_NAMESPACE, p))
        for p in (client, server)
    }
    with traffic(netns[client], netns[server], server_ip) as sender:
        for node in (sender_node, receiver_node):
            before = load(etcd_lab).node(node).agentPid
            _kill_and_restart_agent(etcd_lab, node)
            assert load(etcd_lab).node(node).agentPid != before
        result = finish(sender)
    assert result["error"] is None, result
    assert result["tcp"] > 50 and result["udp"] > 50, result
    assert result["tcp_gap"] < 1.0 and result["udp_gap"] < 1.0, result


def _pod_cidrs(lab: str, node: str) -> list[str] | None:
    found = store_get(lab, "CiliumNode", node)
    if found is None:
        return None
    return list(((found.get("spec") or {}).get("ipam") or {}).get("podCIDRs") or [])


def _node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.64.99"}]},
    }


def test_a_deleted_node_gives_its_pod_cidr_back_for_the_next_node(etcd_lab: str) -> None:
    lab = load(etcd_lab)
    held = {c for n in lab.nodes for c in _pod_cidrs(etcd_lab, n.name) or []}
    assert len(held) == NODES
    ghost, other = f"{etcd_lab}-ghost", f"{etcd_lab}-other"
    try:
        apply(etcd_lab, _node(ghost))
        (cidr,) = wait_for(lambda: _pod_cidrs(etcd_lab, ghost), timeout=10)
        assert cidr not in held
        pylium("--lab", etcd_lab, "delete", "node", ghost)
        # The operator deletes the node's CiliumNode and frees the subnet: the next Node gets
        # the lowest free subnet, which is that one again.
        wait_for(lambda: _pod_cidrs(etcd_lab, ghost) is None, timeout=10)
        apply(etcd_lab, _node(other))
        assert wait_for(lambda: _pod_cidrs(etcd_lab, other), timeout=10) == [cidr]
        # Re-added, the deleted node gets a free subnet again (its old one is taken now).
        apply(etcd_lab, _node(ghost))
        (again,) = wait_for(lambda: _pod_cidrs(etcd_lab, ghost), timeout=10)
        assert again not in held | {cidr}
    finally:
        for name in (ghost, other):
            pylium("--lab", etcd_lab, "delete", "node", name, check=False)
    # The lab's own nodes kept their subnets throughout.
    assert {c for n in lab.nodes for c in _pod_cidrs(etcd_lab, n.name) or []} == held
