"""Partial kube-proxy replacement, as Cilium allows it: a 3-node tunnel lab with kube-proxy's
iptables rules (`--kube-proxy-replacement false --kube-proxy-mode iptables`), socket LB and the
uplink's NodePort path on top (`--bpf-lb-sock true --enable-node-port true`).
`pylium connectivity test` passes; socket LB, not the rules, translates a pod's ClusterIP
connections: they answer (TCP and UDP, the reply path included) while the iptables rule of that
ClusterIP, present on every node, never counts a packet; and the uplink, not the rules, serves a
NodePort from the world: a node without the backend SNATs to its own address (kube-proxy's rules
would SNAT to its router IP), the backend's node keeps the client's."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator

import pytest

from pylium.lab import record
from pylium.lab.connectivity.policy import WITHOUT_POLICY
from tests.lab.conftest import apply, lab_up, pylium, running_pod
from tests.lab.test_nodeport import WORLD_ADDRESSES, answer, backend, node_ip, node_port
from tests.lab.test_nodeport import service as np_service
from tests.lab.test_service_matrix import table
from tests.lab.test_services import CLIENT, cluster_ip, probe, service, web_pod
from tests.support import wait_for

pytestmark = pytest.mark.root

NODES = 3


@pytest.fixture(scope="module")
def pp_lab() -> Iterator[str]:
    """The partial-replacement lab, removed at the end."""
    yield from lab_up(
        f"pp{os.urandom(3).hex()}", "--nodes", str(NODES), "--routing", "tunnel",
        "--kube-proxy-replacement", "false", "--kube-proxy-mode", "iptables",
        "--bpf-lb-sock", "true", "--enable-node-port", "true",
    )  # fmt: skip


def cluster_ip_counters(lab: str, ip: str) -> list[int]:
    """Packet counters of every node's iptables nat rules matching the ClusterIP."""
    counters = []
    for i in range(1, NODES + 1):
        argv = ["nsenter", f"--net=/var/run/netns/{record.node_netns(lab, i)}", "--",
                "iptables-save", "-c", "-t", "nat"]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        counters += [
            int(m[1])
            for m in re.finditer(rf"^\[(\d+):\d+\] -A KUBE-SERVICES .*-d {ip}/32 ", out, re.M)
        ]
    return counters


def test_connectivity_passes_and_socket_lb_translates_the_cluster_ip(pp_lab: str) -> None:
    # The policy scenarios run in test_multinode and the service matrix.
    args = ("--lab", pp_lab, "connectivity", "test", "--test", WITHOUT_POLICY, "-o", "json")
    proc = pylium(*args, check=False)
    report = json.loads(proc.stdout)
    shown = f"{table(report)}\n{proc.stderr}"
    assert proc.returncode == 0, shown
    assert all(s["status"] == "passed" for s in report["scenarios"]), shown

    apply(pp_lab, web_pod("web-a"), web_pod("web-b"), CLIENT, service("web", "web"))
    for name in ("web-a", "web-b", "client"):
        running_pod(pp_lab, name)
    ip = cluster_ip(pp_lab, "web")
    # kube-proxy's rules serve the service too (2 ports on 3 nodes): both LB owners are there
    assert wait_for(lambda: len(cluster_ip_counters(pp_lab, ip)) == 2 * NODES, timeout=15)

    seen: set[str] = set()

    def both() -> bool:
        result = probe(pp_lab, f"{ip}:80")
        if result["ok"]:
            seen.add(result["answer"])
        return seen == {"web-a", "web-b"}

    assert wait_for(both, timeout=30, interval=0.05), seen
    assert probe(pp_lab, f"{ip}:53", "udp")["answer"] in {"web-a", "web-b"}
    # connect()/sendmsg() went to a backend already: no packet to the ClusterIP hit a rule
    assert cluster_ip_counters(pp_lab, ip) == [0] * (2 * NODES)


def test_the_uplink_serves_a_node_port_before_the_rules(pp_lab: str) -> None:
    apply(pp_lab, backend(pp_lab, "np-a", 2, "a"),
          np_service("cluster", {"app": "np", "pod": "a"}, "NodePort"))  # fmt: skip
    running_pod(pp_lab, "np-a")
    port = node_port(pp_lab, "cluster")
    assert answer(pp_lab, f"{node_ip(pp_lab, 1)}:{port}") == ("np-a", node_ip(pp_lab, 1))
    assert answer(pp_lab, f"{node_ip(pp_lab, 2)}:{port}")[1] in WORLD_ADDRESSES
