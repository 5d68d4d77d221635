"""A two-node lab's observability: pod-to-pod flows of both nodes through the lab's Hubble
relay (`pylium observe --server`), and each agent's Prometheus endpoint, which listens on the
node's underlay address inside the node namespace."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pylium import paths
from pylium.lab import record
from tests.lab.conftest import answering, apply, leftovers, pylium, running_pod, server_pod
from tests.support import wait_for
from tests.unit.hubble.test_ui import chromium_argv

pytestmark = pytest.mark.root

NODES = 2


@pytest.fixture(scope="module")
def lab2() -> Iterator[str]:
    """A 2-node lab (name `tw…`), removed at the end; fails if anything of it remains."""
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    name = f"tw{secrets.token_hex(3)}"
    try:
        pylium("lab", "up", "--name", name, "--nodes", str(NODES))
        yield name
    finally:
        pylium("lab", "down", "--name", name, "--force", check=False)
        assert leftovers(name) == {}


@pytest.fixture(scope="module")
def pods(lab2: str) -> dict[str, str]:
    """`client` on node 1 and `server` on node 2, running; name -> pod IP."""
    pinned = {"client": 1, "server": 2}
    objects = []
    for name, node in pinned.items():
        pod = server_pod(name)
        pod["spec"]["nodeName"] = record.node_name(lab2, node)
        objects.append(pod)
    apply(lab2, *objects)
    return {n: running_pod(lab2, n)["status"]["podIP"] for n in pinned}


def _relay_flows(lab: str) -> list[dict[str, Any]]:
    relay = f"unix://{paths.relay_socket(lab)}"
    out = pylium("observe", "--server", relay, "--last", "1000", "-o", "json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_the_relay_shows_cross_node_flows_from_both_nodes(lab2: str, pods: dict[str, str]) -> None:
    assert answering(lab2, "client", "server") == "server"

    between = {pods["client"], pods["server"]}

    def seen_by() -> set[str] | None:
        # by address: a node names only its own pods (the other's are identities)
        nodes = {
            str(resp.get("node_name"))
            for resp in _relay_flows(lab2)
            for ip in [(resp.get("flow") or {}).get("IP") or {}]
            if {ip.get("source"), ip.get("destination")} == between
        }
        return nodes if len(nodes) == NODES else None

    assert wait_for(seen_by, timeout=15, interval=0.2) == {
        record.node_name(lab2, 1),
        record.node_name(lab2, 2),
    }


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


def test_each_agent_serves_metrics_on_its_underlay_address(lab2: str, pods: dict[str, str]) -> None:
    assert answering(lab2, "client", "server") == "server"
    status = json.loads(pylium("--lab", lab2, "lab", "status", "-o", "json").stdout)
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
    lab2: str, pods: dict[str, str], tmp_path: Path
) -> None:
    """A packet from `client` with a source that is not its address is dropped by
    from-container (INVALID_SOURCE_IP, 132); the relay's UI, rendered by headless Chromium,
    shows both pods and the drop on the map and in the flow table."""
    status = json.loads(pylium("--lab", lab2, "lab", "status", "-o", "json").stdout)
    url = status["ui"]
    assert url is not None and url.startswith("http://127.0.0.1:")
    add = ["ip", "addr", "add", f"{SPOOFED}/32", "dev", "eth0"]
    pylium("--lab", lab2, "exec", "client", "--", *add)
    pylium("--lab", lab2, "exec", "client", "--", sys.executable, "-c", _SPOOF, SPOOFED,
           pods["server"])  # fmt: skip

    def dropped() -> bool:
        return any(
            (resp.get("flow") or {}).get("drop_reason") == 132
            and (resp["flow"].get("IP") or {}).get("source") == SPOOFED
            for resp in _relay_flows(lab2)
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
