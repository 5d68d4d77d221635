"""Network policy enforced in the datapath of a 2-node lab: a default-deny NetworkPolicy on a
server pod with an allow from one client label lets that client's probes through from both
nodes and drops the others' (flows DROPPED with Cilium's reason 133, the policy named),
`pylium policy trace` agrees with the datapath, an agent killed and restarted leaves it enforced
throughout, and deleting the policy reopens. ipBlock decides by address (one pod of two sharing
an identity, an except closing one), toCIDR/toCIDRSet and entities reach the world namespace,
the node and the other node as Cilium's do, and an ICMP rule lets ping through by type."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from pylium.lab import record
from tests.lab.conftest import answering, apply, lab_up, pinned_pod, pylium, running_pod
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
WORLD = f"{record.WORLD_IP}:80"
PING = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(1)
body = struct.pack("!BBHHH", 8, 0, 0, 0x7064, 1) + b"pd"
words = sum(struct.unpack("!%dH" % (len(body) // 2), body))
words = (words & 0xFFFF) + (words >> 16)
s.sendto(body[:2] + struct.pack("!H", ~words & 0xFFFF) + body[4:], (sys.argv[1], 0))
while True:
    data, peer = s.recvfrom(2048)
    if peer[0] == sys.argv[1] and data[20] == 0:
        break
"""
"""One ICMP echo request from inside a pod; exits 0 once the reply comes (the lab has no
ping)."""
CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)"
"""A TCP connect from inside a pod (the agent's metrics port answers no probe)."""


@pytest.fixture(scope="module")
def lab() -> Iterator[str]:
    yield from lab_up(f"tq{secrets.token_hex(2)}", "--nodes", "2")


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
        pinned_pod(lab, "server", 1, {"app": "server"}),
        *(pinned_pod(lab, n, node, {"role": role}) for n, (node, role) in CLIENTS.items()),
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


def reaches(lab: str, client: str, target: str) -> bool:
    args = ("--lab", lab, "probe", client, target, "--timeout", "1")
    return pylium(*args, check=False).returncode == 0


def run_in(lab: str, client: str, script: str, *args: str) -> bool:
    """Whether a Python script run in the client pod's netns exits 0."""
    argv = ("--lab", lab, "exec", client, "--", sys.executable, "-c", script, *args)
    return pylium(*argv, check=False).returncode == 0


def connects(lab: str, client: str, node: int) -> bool:
    """Whether the client's TCP connect to a node's agent metrics port succeeds."""
    return run_in(lab, client, CONNECT, record.node_underlay_ip(node), str(record.METRICS_PORT))


def ingress_from_block(block: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "server-ipblock", "namespace": "default"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "server"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"ipBlock": block}]}],
        },
    }


def cnp(name: str, labels: dict[str, str], rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"endpointSelector": {"matchLabels": labels}, **rules},
    }


def test_that_an_ipblock_decides_by_address_even_between_pods_of_one_identity(lab, pods):
    ip = pods["server"]
    # ok1 and ok2 share one identity (role=ok): only their addresses tell them apart.
    apply(lab, ingress_from_block({"cidr": f"{pods['ok1']}/32"}))
    wait_for(lambda: not probe(lab, "ok2", ip), timeout=10, interval=0.2)
    assert (probe(lab, "ok1", ip), probe(lab, "bad1", ip)) == (True, False)

    apply(lab, ingress_from_block({"cidr": "0.0.0.0/0", "except": [f"{pods['ok2']}/32"]}))
    wait_for(lambda: probe(lab, "bad2", ip), timeout=10, interval=0.2)
    assert {c: probe(lab, c, ip) for c in CLIENTS} == {
        "ok1": True,
        "ok2": False,
        "bad1": True,
        "bad2": True,
    }
    pylium("--lab", lab, "delete", "networkpolicy", "server-ipblock", "-n", "default")
    wait_for(lambda: probe(lab, "ok2", ip), timeout=10, interval=0.2)


def test_that_cidr_rules_and_entities_reach_the_world_the_node_and_the_other_node(lab, pods):
    server = f"{pods['server']}:80"
    before = (reaches(lab, "bad1", WORLD), connects(lab, "bad1", 1), connects(lab, "bad1", 2))
    assert before == (True, True, True)

    def egress(*rules: dict[str, Any]) -> None:
        apply(lab, cnp("bad-out", {"role": "bad"}, {"egress": list(rules)}))

    egress({"toEntities": ["world"]})
    wait_for(lambda: not reaches(lab, "bad1", server), timeout=10, interval=0.2)
    assert reaches(lab, "bad1", WORLD)
    egress({"toEntities": ["cluster"]})
    wait_for(lambda: reaches(lab, "bad1", server), timeout=10, interval=0.2)
    assert not reaches(lab, "bad1", WORLD)
    egress({"toCIDR": [record.WORLD_CIDR]})
    wait_for(lambda: reaches(lab, "bad1", WORLD), timeout=10, interval=0.2)
    assert not reaches(lab, "bad1", server)  # Cilium's CIDR rules leave pods out
    egress({"toCIDRSet": [{"cidr": record.WORLD_CIDR, "except": [f"{record.WORLD_IP}/32"]}]})
    wait_for(lambda: not reaches(lab, "bad1", WORLD), timeout=10, interval=0.2)
    egress({"toEntities": ["host"]})
    wait_for(lambda: connects(lab, "bad1", 1), timeout=10, interval=0.2)
    assert not connects(lab, "bad1", 2)
    egress({"toEntities": ["remote-node"]})
    wait_for(lambda: connects(lab, "bad1", 2), timeout=10, interval=0.2)
    assert not connects(lab, "bad1", 1)
    pylium("--lab", lab, "delete", "ciliumnetworkpolicy", "bad-out", "-n", "default")
    wait_for(lambda: reaches(lab, "bad1", server), timeout=10, interval=0.2)


def test_that_an_icmp_rule_lets_echo_requests_through_and_nothing_else(lab, pods):
    ip = pods["server"]

    def ping(client: str) -> bool:
        return run_in(lab, client, PING, ip)

    assert ping("bad2")  # open before
    icmp = {"icmps": [{"fields": [{"type": 8, "family": "IPv4"}]}]}
    apply(lab, cnp("server-ping", {"app": "server"}, {"ingress": [icmp]}))
    wait_for(lambda: not probe(lab, "bad2", ip), timeout=10, interval=0.2)
    assert (ping("bad1"), ping("bad2")) == (True, True)
    pylium("--lab", lab, "delete", "ciliumnetworkpolicy", "server-ping", "-n", "default")
    wait_for(lambda: probe(lab, "bad2", ip), timeout=10, interval=0.2)
