"""Tunnel and native routing end to end: a 3-node lab in tunnel mode passes the connectivity
test's pod scenarios over VXLAN, the receiving node's flows name the source pod's identity
(the number `pylium get identities` shows, carried in the VNI), every node's ipcache map
equals its ipcache table; a native lab's cross-node flows carry identities too."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import IPv4Network
from typing import Any

import aiohttp
import pytest

from pylium import paths
from pylium.datapath.ipcache import IPCacheKey, ipcache_map
from pylium.datapath.maps import RawMap
from pylium.lab import record
from pylium.lab.connectivity.policy import WITHOUT_POLICY
from tests.lab.conftest import apply, lab_up, pylium
from tests.support import wait_for

POD_SCENARIOS = ("pod-to-pod-same-node", "pod-to-pod-other-node", "pod-to-host")


def _lab(nodes: int, routing: str) -> Iterator[str]:
    yield from lab_up(f"tt{secrets.token_hex(2)}", "--nodes", str(nodes), "--routing", routing)


@pytest.fixture(scope="module")
def tunnel_lab() -> Iterator[str]:
    yield from _lab(3, "tunnel")


@pytest.fixture(scope="module")
def native_lab() -> Iterator[str]:
    yield from _lab(2, "native")


def load(lab: str) -> record.LabRecord:
    found = record.load(lab)
    assert found is not None, f"no lab {lab}"
    return found


def connectivity(lab: str) -> dict[str, str]:
    """Scenario name -> status of one `pylium connectivity test` run (without the policy
    scenarios: test_multinode and the service matrix run them)."""
    proc = pylium(
        "--lab", lab, "connectivity", "test", "--test", WITHOUT_POLICY, "-o", "json", check=False
    )
    return {s["name"]: s["status"] for s in json.loads(proc.stdout)["scenarios"]}


def agent_get(lab: str, node: int, path: str) -> Any:
    """GET from a node's agent REST API."""
    socket = load(lab).nodes[node - 1].agentSocket

    async def get() -> Any:
        async with (
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket)) as session,
            session.get(f"http://agent{path}") as resp,
        ):
            resp.raise_for_status()
            return await resp.json()

    return asyncio.run(get())


def identity_of(lab: str, pod: str, *labels: str) -> int:
    """The pod's identity (the one with `labels` too) as `pylium get identities` lists it."""
    out = pylium("--lab", lab, "get", "identities").stdout
    rows = [line.split() for line in out.splitlines()[1:]]
    want = {f"k8s:name={pod}", *labels}
    rows = [r for r in rows if want <= set(r[1].split(","))]
    assert len(rows) == 1, out
    return int(rows[0][0])


def pod_ip(lab: str, pod: str) -> str:
    out = pylium("--lab", lab, "get", "pod", pod, "-n", "pylium-test", "-o", "json").stdout
    return str(json.loads(out)["status"]["podIP"])


def received_flows(lab: str, src: str, dst: str, node: str) -> list[dict[str, Any]]:
    """Flows of TCP from `src` to `dst` reported by to-container on `node`."""
    args = ["--lab", lab, "observe", "--last", "500", "--from-ip", src, "--to-ip", dst]
    out = pylium(*args, "--protocol", "tcp", "-o", "json").stdout
    flows = [json.loads(line) for line in out.splitlines() if line.strip()]
    flows = [f.get("flow", f) for f in flows]
    return [
        f
        for f in flows
        if f["node_name"] == node and f.get("trace_observation_point") == "TO_ENDPOINT"
    ]


def assert_source_identity_on_receiver(lab: str, receiver: int) -> None:
    client, echo = pod_ip(lab, "client"), pod_ip(lab, "echo-other-node")
    node = record.node_name(lab, receiver)
    flows = wait_for(lambda: received_flows(lab, client, echo, node), timeout=10)
    want = identity_of(lab, "client")
    assert {f["source"]["identity"] for f in flows} == {want}
    assert {f["destination"]["identity"] for f in flows} == {identity_of(lab, "echo-other-node")}
    # TCP flags ride in the event: the handshake's SYN is among them.
    assert any(f["l4"]["TCP"].get("flags", {}).get("SYN") for f in flows)


def test_that_a_tunnel_lab_passes_the_connectivity_test(tunnel_lab: str) -> None:
    statuses = connectivity(tunnel_lab)
    assert set(POD_SCENARIOS) <= set(statuses)
    assert statuses == dict.fromkeys(statuses, "passed")  # services and world too
    # Pods get the uplink's MTU less the VXLAN overhead, so encapsulated packets fit.
    lab = load(tunnel_lab)
    pod_ns = record.pod_netns(tunnel_lab, "pylium-test", "client")
    link = subprocess.run(
        ["ip", "-n", pod_ns, "link", "show", "eth0"], capture_output=True, text=True, check=True
    ).stdout
    assert f"mtu {lab.uplinkMtu - 50} " in link


def test_that_tunnel_mode_carries_traffic_in_vxlan_at_the_pod_mtu(tunnel_lab: str) -> None:
    lab = load(tunnel_lab)
    assert lab.mtu == lab.uplinkMtu - 50
    for node in lab.nodes:
        link = subprocess.run(
            ["ip", "-n", node.netns, "-d", "link", "show", "pylium_vxlan"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "vxlan external" in link and "dstport 8472" in link
        assert f"mtu {lab.mtu} " in link
        # Every other node's pod CIDR is routed into the tunnel, none through the underlay.
        routes = subprocess.run(
            ["ip", "-n", node.netns, "route"], capture_output=True, text=True, check=True
        ).stdout
        cidrs = [r for r in routes.splitlines() if r.startswith("10.244.") and "/" in r]
        others = {n.podCIDR for n in lab.nodes if n is not node}
        assert {r.split()[0] for r in cidrs} == others
        assert all("dev pylium_vxlan" in r and f"mtu {lab.mtu}" in r for r in cidrs)


def test_that_the_receiving_node_sees_the_tunnelled_source_identity(tunnel_lab: str) -> None:
    # Without the client's /32 in the receiving node's ipcache map, a lookup would find node1's
    # pod CIDR (world): the identity the flows show can only have come in the VNI.
    pin = paths.bpffs_node_dir(record.node_name(tunnel_lab, 2)) / "pylium_ipcache4"
    key = IPCacheKey.of(IPv4Network(pod_ip(tunnel_lab, "client")))
    with RawMap.from_pin(pin) as raw:
        ipcache = ipcache_map(raw)
        saved = ipcache.lookup(key)
        ipcache.delete(key)
        try:
            assert connectivity(tunnel_lab)["pod-to-pod-other-node"] == "passed"
            assert_source_identity_on_receiver(tunnel_lab, receiver=2)
        finally:
            ipcache.update(key, saved)


def test_that_every_ipcache_map_equals_its_table(tunnel_lab: str) -> None:
    def equal(node: int) -> bool:
        dump = agent_get(tunnel_lab, node, "/v1/ipcache")
        table = {(e["prefix"], e["identity"], e["tunnelEndpoint"]) for e in dump["entries"]}
        kernel = {(e["prefix"], e["identity"], e["tunnelEndpoint"]) for e in dump["map"]}
        return bool(table) and table == kernel

    for node in (1, 2, 3):
        assert wait_for(lambda n=node: equal(n), timeout=10)
    dump = agent_get(tunnel_lab, 1, "/v1/ipcache")
    client = next(e for e in dump["map"] if e["prefix"] == f"{pod_ip(tunnel_lab, 'client')}/32")
    assert client["identity"] == identity_of(tunnel_lab, "client")
    remote = next(
        e for e in dump["map"] if e["prefix"] == f"{pod_ip(tunnel_lab, 'echo-other-node')}/32"
    )
    node2 = load(tunnel_lab).nodes[1]
    assert remote["tunnelEndpoint"] == node2.underlayIP


def test_that_native_cross_node_flows_carry_identities(native_lab: str) -> None:
    statuses = connectivity(native_lab)
    assert statuses["pod-to-pod-other-node"] == "passed"
    assert_source_identity_on_receiver(native_lab, receiver=2)


def test_that_a_namespace_relabel_moves_the_pods_datapath_identity(tunnel_lab: str) -> None:
    before = identity_of(tunnel_lab, "client")
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "pylium-test", "labels": {"team": "tunnel"}},
    }
    apply(tunnel_lab, namespace)
    team = "k8s:io.cilium.k8s.namespace.labels.team=tunnel"
    after = wait_for(lambda: rows_of(tunnel_lab, team) and identity_of(tunnel_lab, "client", team))
    assert after != before
    client = pod_ip(tunnel_lab, "client")
    # Node1 rewrites the client's endpoint entry (from-container's source, the VNI) as it
    # applies the ipcache change; node2's ipcache follows too.
    for node in (1, 2):
        assert wait_for(
            lambda n=node: ipcache_identity(tunnel_lab, n, f"{client}/32") == after, timeout=10
        )
    # A probe, not the connectivity test: that re-applies the namespace without the label.
    probe = ["--lab", tunnel_lab, "probe", "-n", "pylium-test", "client", "echo-other-node:8080"]
    assert pylium(*probe).stdout.strip() == "echo-other-node"
    args = ["--lab", tunnel_lab, "observe", "--last", "4", "--from-ip", client, "-o", "json"]
    flows = [json.loads(line) for line in pylium(*args).stdout.splitlines() if line.strip()]
    assert flows and {f.get("flow", f)["source"]["identity"] for f in flows} == {after}


def rows_of(lab: str, label: str) -> bool:
    return label in pylium("--lab", lab, "get", "identities").stdout


def ipcache_identity(lab: str, node: int, prefix: str) -> int | None:
    dump = agent_get(lab, node, "/v1/ipcache")
    return next((e["identity"] for e in dump["map"] if e["prefix"] == prefix), None)


def test_that_a_node_reaches_a_remote_pod_through_the_tunnel_as_remote_node(
    tunnel_lab: str,
) -> None:
    lab = load(tunnel_lab)
    connectivity(tunnel_lab)
    echo = pod_ip(tunnel_lab, "echo-other-node")
    routes = subprocess.run(
        ["ip", "-n", lab.nodes[0].netns, "route"], capture_output=True, text=True, check=True
    ).stdout
    assert f"{lab.nodes[1].podCIDR} dev pylium_vxlan" in routes
    connect = (
        "import socket, sys;"
        f"s = socket.create_connection(({echo!r}, 8080), timeout=3);"
        "sys.stdout.write(s.recv(100).decode())"
    )
    answer = subprocess.run(
        ["ip", "netns", "exec", lab.nodes[0].netns, sys.executable, "-c", connect],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert answer.strip() == "echo-other-node"
    router = str(IPv4Network(lab.nodes[0].podCIDR)[1])
    flows = wait_for(lambda: received_flows(tunnel_lab, router, echo, lab.nodes[1].name))
    assert {f["source"]["identity"] for f in flows} == {6}  # remote-node
