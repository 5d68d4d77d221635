"""A three-node lab's observability through the lab's Hubble relay (`pylium observe
--server`): pod-to-pod flows across nodes, a pod-to-service connection with its socket-LB
translation (TRANSLATED, the service named), a policy drop naming the policy, and every filter
of `pylium observe` narrowing them; each agent's Prometheus endpoint (on the node's underlay
address inside the node namespace) and the relay's web UI in headless Chromium."""

from __future__ import annotations

import json
import os
import secrets
import select
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pylium import paths
from pylium.hubble.flow import format_time, parse_time
from pylium.lab import record
from tests.lab.conftest import (
    PYLIUM,
    answering,
    apply,
    leftovers,
    pylium,
    running_pod,
    server_pod,
    store_get,
)
from tests.support import wait_for
from tests.unit.hubble.test_ui import chromium_argv

pytestmark = pytest.mark.root

NODES = 3
OTHER = "other"
"""The namespace of `blocked`, which the policy does not admit."""
POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "server-from-default", "namespace": "default"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "server"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {}}]}],
    },
}
SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "echo", "namespace": "default"},
    "spec": {
        "selector": {"app": "server"},
        "ports": [{"name": "http", "port": 8080, "targetPort": 80, "protocol": "TCP"}],
    },
}
Flow = dict[str, Any]


@pytest.fixture(scope="module")
def lab3() -> Iterator[str]:
    """A 3-node lab (name `ob…`), removed at the end; fails if anything of it remains."""
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    name = f"ob{secrets.token_hex(3)}"
    try:
        pylium("lab", "up", "--name", name, "--nodes", str(NODES))
        yield name
    finally:
        pylium("lab", "down", "--name", name, "--force", check=False)
        assert leftovers(name) == {}


@pytest.fixture(scope="module")
def pods(lab3: str) -> dict[str, str]:
    """`client` (node 1), `server` (node 2, behind Service `echo`, admitting only its own
    namespace) and `blocked` (node 3, namespace `other`), running; name -> pod IP."""
    pinned = {"client": (1, "default"), "server": (2, "default"), "blocked": (3, OTHER)}
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OTHER}},
        POLICY,
        SERVICE,
    ]
    for name, (node, namespace) in pinned.items():
        pod = server_pod(name, namespace)
        pod["metadata"]["labels"] = {"app": name}
        pod["spec"]["nodeName"] = record.node_name(lab3, node)
        objects.append(pod)
    apply(lab3, *objects)
    return {n: running_pod(lab3, n, ns)["status"]["podIP"] for n, (_, ns) in pinned.items()}


def _relay_flows(lab: str, *args: str) -> list[Flow]:
    """The flows of `pylium observe --server <relay> ARGS -o json` (every GetFlowsResponse's
    flow), oldest first; without ARGS the newest 2000."""
    relay = f"unix://{paths.relay_socket(lab)}"
    out = pylium("observe", "--server", relay, *(args or ("--last", "2000")), "-o", "json").stdout
    return [json.loads(line)["flow"] for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def traffic(lab3: str, pods: dict[str, str]) -> list[Flow]:
    """Pod to pod (TCP and UDP), pod to the service's ClusterIP, and a policy-dropped
    connection; waits until the relay has all three kinds and returns its flows."""
    assert answering(lab3, "client", "server") == "server"
    assert answering(lab3, "client", "server", port=53, protocol="udp") == "server"
    cluster_ip = wait_for(lambda: ((echo(lab3) or {}).get("spec") or {}).get("clusterIP"))
    assert answering(lab3, "client", cluster_ip, 8080) == "server"
    blocked = pylium("--lab", lab3, "probe", "-n", OTHER, "blocked", f"{pods['server']}:80",
                     "--timeout", "0.5", check=False)  # fmt: skip
    assert blocked.returncode == 1, blocked.stdout

    def complete() -> list[Flow] | None:
        flows = _relay_flows(lab3)
        kinds = {f.get("verdict") for f in flows}
        return flows if {"FORWARDED", "TRANSLATED", "DROPPED"} <= kinds else None

    return wait_for(complete, timeout=15, interval=0.3)


def echo(lab: str) -> dict[str, Any] | None:
    """The Service object `echo` as the store has it."""
    return store_get(lab, "Service", "echo", "default")


def test_the_relay_shows_cross_node_flows_from_both_nodes(
    lab3: str, pods: dict[str, str], traffic: list[Flow]
) -> None:
    # by address: a node names only its own pods (the other's are identities)
    between = {pods["client"], pods["server"]}
    nodes = {
        f["node_name"]
        for f in traffic
        if {(f.get("IP") or {}).get("source"), (f.get("IP") or {}).get("destination")} == between
    }
    assert nodes == {record.node_name(lab3, 1), record.node_name(lab3, 2)}
    assert any(f.get("source", {}).get("pod_name") == "client" for f in traffic)
    assert any(f.get("destination", {}).get("pod_name") == "server" for f in traffic)


def test_a_service_connection_shows_its_socket_translation(
    lab3: str, pods: dict[str, str], traffic: list[Flow]
) -> None:
    """Socket LB on node 1 reports the connect() to echo's ClusterIP before and after the
    translation, both naming the service; the post-translation destination is the backend."""
    cluster_ip = (echo(lab3) or {})["spec"]["clusterIP"]
    translated = [f for f in traffic if f["verdict"] == "TRANSLATED"]
    assert all(f["destination_service"] == {"name": "echo", "namespace": "default"}
               for f in translated)  # fmt: skip
    assert all(f["node_name"] == record.node_name(lab3, 1) and f["Type"] == "SOCK"
               for f in translated)  # fmt: skip
    points = {
        f["sock_xlate_point"]: (f["IP"]["destination"], f["l4"]["TCP"]["destination_port"])
        for f in translated
    }
    assert points == {
        "SOCK_XLATE_POINT_PRE_DIRECTION_FWD": (cluster_ip, 8080),
        "SOCK_XLATE_POINT_POST_DIRECTION_FWD": (pods["server"], 80),
    }


def test_a_policy_drop_names_the_pod_and_the_policy(
    lab3: str, pods: dict[str, str], traffic: list[Flow]
) -> None:
    drops = [f for f in traffic if f.get("drop_reason_desc") == "POLICY_DENIED"]
    assert drops, traffic
    for f in drops:
        assert f["IP"] == {"source": pods["blocked"], "destination": pods["server"],
                           "ipVersion": "IPv4"}  # fmt: skip
        assert f["destination"]["pod_name"] == "server"
        assert f["traffic_direction"] == "INGRESS"
        assert [p["name"] for p in f["ingress_denied_by"]] == ["server-from-default"]


def _ip(f: Flow) -> dict[str, str]:
    return f.get("IP") or {}


def _l4(f: Flow) -> dict[str, Any]:
    layer = f.get("l4") or {}
    return next(iter(layer.values()), {}) if layer else {}


def _dst_pod(f: Flow) -> str:
    return str(f.get("destination", {}).get("pod_name", ""))


def _pods(f: Flow) -> set[str]:
    return {
        f"{ep.get('namespace')}/{ep.get('pod_name')}"
        for ep in (f.get("source") or {}, f.get("destination") or {})
        if ep.get("pod_name")
    }


def _narrows(
    lab: str, everything: list[Flow], args: list[str], keep: Callable[[Flow], bool]
) -> None:
    """`args` selects a non-empty set of flows that all satisfy `keep`, and `everything`
    has a flow it leaves out (so the filter did narrow)."""
    selected = _relay_flows(lab, "--last", "2000", *args)
    assert selected, args
    assert all(keep(f) for f in selected), (args, [f for f in selected if not keep(f)][:3])
    assert any(not keep(f) for f in everything), args


def test_every_filter_narrows_the_relay_flows(
    lab3: str, pods: dict[str, str], traffic: list[Flow]
) -> None:
    server_identity = next(
        f.get("destination", {})["identity"]
        for f in traffic
        if f.get("destination", {}).get("pod_name") == "server"
        and f.get("destination", {}).get("identity")
    )
    node2 = record.node_name(lab3, 2)
    cases: list[tuple[list[str], Callable[[Flow], bool]]] = [
        (["--pod", "default/server"], lambda f: "default/server" in _pods(f)),
        (["--from-pod", "client"], lambda f: f.get("source", {}).get("pod_name") == "client"),
        (["--to-pod", "server"], lambda f: f.get("destination", {}).get("pod_name") == "server"),
        (["--namespace", "default"], lambda f: any(p.startswith("default/") for p in _pods(f))),
        (["--label", "k8s:io.kubernetes.pod.namespace=default"],
         lambda f: "k8s:io.kubernetes.pod.namespace=default"
         in f.get("source", {}).get("labels", []) + f.get("destination", {}).get("labels", [])),
        (["--ip", pods["blocked"]], lambda f: pods["blocked"] in _ip(f).values()),
        (["--to-ip", pods["server"]], lambda f: _ip(f).get("destination") == pods["server"]),
        (["--service", "default/echo"],
         lambda f: (f.get("destination_service") or {}).get("name") == "echo"),
        (["--to-identity", str(server_identity)],
         lambda f: f.get("destination", {}).get("identity") == server_identity),
        (["--verdict", "DROPPED"], lambda f: f["verdict"] == "DROPPED"),
        (["--verdict", "TRANSLATED"], lambda f: f["verdict"] == "TRANSLATED"),
        (["--drop-reason-desc", "POLICY_DENIED"],
         lambda f: f.get("drop_reason_desc") == "POLICY_DENIED"),
        (["--protocol", "udp"], lambda f: "UDP" in (f.get("l4") or {})),
        (["--port", "53"], lambda f: 53 in (_l4(f).get("source_port"), _l4(f).get(
            "destination_port"))),
        (["--type", "trace-sock"], lambda f: f.get("event_type", {}).get("type") == 7),
        (["--type", "drop"], lambda f: f.get("event_type", {}).get("type") == 1),
        (["--traffic-direction", "ingress"], lambda f: f.get("traffic_direction") == "INGRESS"),
        (["--node-name", node2], lambda f: f["node_name"] == node2),
        (["--not", "protocol=tcp"], lambda f: "TCP" not in (f.get("l4") or {})),
        (["--to-pod", "server", "--not", "verdict=DROPPED"],
         lambda f: _dst_pod(f) == "server" and f["verdict"] != "DROPPED"),
    ]  # fmt: skip
    everything = _relay_flows(lab3)
    for args, keep in cases:
        _narrows(lab3, everything, args, keep)


def _stamp(f: Flow) -> int:
    """Nanoseconds since the epoch (the JSON text's fraction has 0, 3, 6 or 9 digits, so
    the texts do not sort)."""
    return parse_time(str(f["time"]))


def test_time_and_count_bounds(lab3: str, traffic: list[Flow]) -> None:
    """--since/--until cut at a flow's time; --last/--first give the newest/oldest N."""
    everything = _relay_flows(lab3)
    assert len(everything) >= 4
    middle = _stamp(everything[len(everything) // 2])
    since = _relay_flows(lab3, "--since", format_time(middle), "--last", "2000")
    until = _relay_flows(lab3, "--until", format_time(middle), "--last", "2000")
    assert since and until
    assert all(_stamp(f) >= middle for f in since) and all(_stamp(f) <= middle for f in until)
    assert len(since) < len(everything) + 10 and _stamp(everything[0]) < middle
    last = _relay_flows(lab3, "--last", "3")
    first = _relay_flows(lab3, "--first", "3")
    assert len(last) == 3 and len(first) == 3
    assert [_stamp(f) for f in last] == sorted(_stamp(f) for f in last)
    assert max(_stamp(f) for f in first) <= min(_stamp(f) for f in last)
    assert first == everything[:3] or _stamp(first[-1]) <= _stamp(everything[2])
    assert _relay_flows(lab3, "--since", format_time(time.time_ns() + 3_600_000_000_000)) == []


def test_follow_prints_new_flows_as_they_happen(lab3: str, pods: dict[str, str]) -> None:
    relay = f"unix://{paths.relay_socket(lab3)}"
    argv = [PYLIUM, "observe", "--server", relay, "--follow",
            "--since", format_time(time.time_ns()), "--to-port", "53", "-o", "json"]  # fmt: skip
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as follower:
        try:
            assert answering(lab3, "client", "server", port=53, protocol="udp") == "server"
            assert follower.stdout is not None
            readable, _, _ = select.select([follower.stdout], [], [], 15)
            assert readable, "no flow followed within 15 s"
            flow = json.loads(follower.stdout.readline())["flow"]
            assert _l4(flow)["destination_port"] == 53
            assert follower.poll() is None  # still following
        finally:
            follower.kill()


_SCRAPE = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())"


def _scrape(netns: str, address: str) -> dict[str, float]:
    """`/metrics` of an agent, fetched from inside a node namespace: sample name -> sum."""
    out = subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{netns}", "--", sys.executable, "-c", _SCRAPE,
         f"http://{address}/metrics"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    totals: dict[str, float] = {}
    for line in out.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
            totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def test_each_agent_serves_metrics_on_its_underlay_address(lab3: str, pods: dict[str, str]) -> None:
    assert answering(lab3, "client", "server") == "server"
    status = json.loads(pylium("--lab", lab3, "lab", "status", "-o", "json").stdout)
    first = status["nodes"][0]
    for node in status["nodes"]:
        # from node 1's namespace: the underlay carries node 2's endpoint too
        scraped = wait_for(
            lambda node=node: (
                m
                if (m := _scrape(first["netns"], node["metricsAddress"])).get(
                    "hubble_flows_processed_total"
                )
                else None
            ),
            timeout=15,
            interval=0.2,
        )
        assert scraped["pylium_endpoint"] == 1, node["name"]


_SPOOF = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
for _ in range(3):
    s.sendto(b"spoofed", (sys.argv[2], 53))
"""
SPOOFED = "10.244.250.77"


def test_the_ui_shows_the_lab_pods_and_a_dropped_flow(
    lab3: str, pods: dict[str, str], tmp_path: Path
) -> None:
    """A packet from `client` with a source that is not its address is dropped by
    from-container (INVALID_SOURCE_IP, 132); the relay's UI, rendered by headless Chromium,
    shows both pods and the drop on the map and in the flow table."""
    status = json.loads(pylium("--lab", lab3, "lab", "status", "-o", "json").stdout)
    url = status["ui"]
    assert url is not None and url.startswith("http://127.0.0.1:")
    add = ["ip", "addr", "add", f"{SPOOFED}/32", "dev", "eth0"]
    pylium("--lab", lab3, "exec", "client", "--", *add)
    pylium("--lab", lab3, "exec", "client", "--", sys.executable, "-c", _SPOOF, SPOOFED,
           pods["server"])  # fmt: skip

    def dropped() -> bool:
        return any(
            f.get("drop_reason") == 132 and _ip(f).get("source") == SPOOFED
            for f in _relay_flows(lab3)
        )

    wait_for(dropped, timeout=15, interval=0.2)
    dom = subprocess.run(
        chromium_argv(tmp_path / "profile", "--dump-dom", url),
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert 'data-id="pod:default/client"' in dom and 'data-id="pod:default/server"' in dom
    servicemap = urllib.request.urlopen(url + "api/servicemap?verdict=DROPPED").read().decode()
    assert 'data-verdict="DROPPED"' in dom, servicemap
    assert "DROPPED: INVALID_SOURCE_IP" in dom
    assert '<tr class="DROPPED">' in dom
    shot = tmp_path / "ui.png"
    subprocess.run(
        chromium_argv(tmp_path / "profile", f"--screenshot={shot}", url),
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    assert shot.stat().st_size > 10_000
