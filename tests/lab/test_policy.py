"""Network policy enforced in the datapath of a 2-node lab: a default-deny NetworkPolicy on a
server pod with an allow from one client label lets that client's probes through from both
nodes and drops the others' (flows DROPPED with Cilium's reason 133, the policy named),
`pylium policy trace` agrees with the datapath, an agent killed and restarted leaves it enforced
throughout, and deleting the policy reopens."""

from __future__ import annotations

import json
import os
import secrets
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from pylium.lab import record
from tests.lab.conftest import answering, apply, leftovers, pylium, running_pod, server_pod
from tests.support import wait_for

POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "server-allow-ok", "namespace": "default"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "server"}},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [{"podSelector": {"matchLabels": {"role": "ok"}}}],
                "ports": [{"port": 80, "protocol": "TCP"}],
            }
        ],
    },
}
NAMED = {
    "name": "server-allow-ok",
    "namespace": "default",
    "labels": ["netpol:default/server-allow-ok spec.ingress[0]"],
    "kind": "NetworkPolicy",
}
CLIENTS = {"ok1": (1, "ok"), "ok2": (2, "ok"), "bad1": (1, "bad"), "bad2": (2, "bad")}


@pytest.fixture(scope="module")
def lab() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    name = f"tq{secrets.token_hex(2)}"
    try:
        pylium("lab", "up", "--name", name, "--nodes", "2")
        yield name
    finally:
        pylium("lab", "down", "--name", name, "--force", check=False)
        assert leftovers(name) == {}


def pod(name: str, node: int, labels: dict[str, str], lab: str) -> dict[str, Any]:
    obj = server_pod(name)
    obj["metadata"]["labels"] = labels
    obj["spec"]["nodeName"] = record.node_name(lab, node)
    return obj


def probe(lab: str, client: str, ip: str) -> bool:
    args = ("--lab", lab, "probe", client, f"{ip}:80", "--timeout", "1")
    return pylium(*args, check=False).returncode == 0


def trace(lab: str, client: str) -> bool:
    args = ("--lab", lab, "policy", "trace", "--from", f"default/{client}")
    return pylium(*args, "--to", "default/server", "--port", "80/TCP", check=False).returncode == 0


@pytest.fixture(scope="module")
def pods(lab: str) -> dict[str, str]:
    """The server on node1 and the clients on both nodes, each answering the server: pod ->
    IP."""
    apply(
        lab,
        pod("server", 1, {"app": "server"}, lab),
        *(pod(n, node, {"role": role}, lab) for n, (node, role) in CLIENTS.items()),
    )
    ips = {name: running_pod(lab, name)["status"]["podIP"] for name in ("server", *CLIENTS)}
    for client in CLIENTS:
        answering(lab, client, ips["server"])  # open before any policy
    return ips


def test_that_a_default_deny_policy_lets_only_the_allowed_label_in(lab, pods):
    ip = pods["server"]
    client_ips = {pods[client]: client for client in CLIENTS}

    apply(lab, POLICY)
    wait_for(lambda: not probe(lab, "bad1", ip), timeout=10, interval=0.2)

    verdicts = {client: probe(lab, client, ip) for client in CLIENTS}
    assert verdicts == {"ok1": True, "ok2": True, "bad1": False, "bad2": False}
    assert {client: trace(lab, client) for client in CLIENTS} == verdicts
    dropped = [
        json.loads(line)
        for line in pylium(
            "--lab", lab, "observe", "--verdict", "DROPPED", "--to-pod", "server", "-o", "json"
        ).stdout.splitlines()
    ]
    assert dropped, "no DROPPED flow to the server"
    sources = set()
    for flow in dropped:
        flow = flow.get("flow", flow)
        assert flow["drop_reason"] == 133
        assert flow["drop_reason_desc"] == "POLICY_DENIED"
        assert flow["traffic_direction"] == "INGRESS"
        assert flow["ingress_denied_by"] == [NAMED]
        sources.add(client_ips[flow["IP"]["source"]])
    assert sources == {"bad1", "bad2"}  # the other node's client too
    allowed = [
        json.loads(line)
        for line in pylium(
            "--lab", lab, "observe", "--to-pod", "server", "--to-port", "80", "-o", "json"
        ).stdout.splitlines()
    ]
    allowed = [f.get("flow", f) for f in allowed]
    assert any(f.get("ingress_allowed_by") == [NAMED] for f in allowed), allowed

    # Agent restart never opens a hole: the pinned maps enforce while it is down and after.
    node1 = record.node_name(lab, 1)
    found = record.load(lab)
    assert found is not None
    pid = found.node(node1).agentPid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert (probe(lab, "ok1", ip), probe(lab, "bad1", ip)) == (True, False)
    pylium("--lab", lab, "lab", "restart", "agent", "--node", node1)
    assert (probe(lab, "ok1", ip), probe(lab, "bad1", ip), probe(lab, "bad2", ip)) == (
        True,
        False,
        False,
    )

    pylium("--lab", lab, "delete", "networkpolicy", "server-allow-ok", "-n", "default")
    wait_for(lambda: probe(lab, "bad2", ip), timeout=10, interval=0.2)
    assert probe(lab, "bad1", ip)


def test_that_an_egress_policy_limits_a_client_to_the_allowed_peer_across_nodes(lab, pods):
    ip, other = pods["server"], pods["bad1"]
    egress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "ok2-to-server", "namespace": "default"},
        "spec": {
            "podSelector": {"matchLabels": {"role": "ok"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "server"}}}]}],
        },
    }
    apply(lab, egress)
    wait_for(lambda: not probe(lab, "ok2", other), timeout=10, interval=0.2)

    # ok2 (node2) reaches the server on node1; its connection to bad1 (node1) is dropped at
    # ok2's own from-container.
    assert (probe(lab, "ok2", ip), probe(lab, "ok2", other)) == (True, False)
    assert probe(lab, "bad2", other)  # not selected: unaffected
    flows = [
        json.loads(line)
        for line in pylium(
            "--lab", lab, "observe", "--verdict", "DROPPED", "--from-pod", "ok2", "-o", "json"
        ).stdout.splitlines()
    ]
    flows = [f.get("flow", f) for f in flows]
    assert flows and all(f["traffic_direction"] == "EGRESS" for f in flows), flows
    assert all(f["drop_reason"] == 133 for f in flows)
    assert {f["node_name"] for f in flows} == {record.node_name(lab, 2)}
    assert all(f["egress_denied_by"][0]["name"] == "ok2-to-server" for f in flows)
    pylium("--lab", lab, "delete", "networkpolicy", "ok2-to-server", "-n", "default")
    wait_for(lambda: probe(lab, "ok2", other), timeout=10, interval=0.2)
