"""A handful of the shared NetworkPolicy truth-table cases (`shared/conformance/netpol/cases.yaml`)
run against the datapath of a 2-node lab: the model's namespaces and pods (spread over both
nodes), each case's policies applied, then every ordered pod pair probed on 80/TCP and 81/UDP
and compared with the case's expected table (polled until it matches, up to 15 s, as upstream
polls each pair). The model loading and CIDR substitution are POLICY's harness
(tests/unit/policy/netpol_model.py)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from pylium import paths
from pylium.lab import record
from tests.lab.conftest import apply, leftovers, pylium, running_pod
from tests.unit.policy.netpol_model import NAME_LABEL, load_cases

CASES = ("cyc-001", "cyc-016", "spec-06", "spec-18")
PROBES = ((80, "TCP"), (81, "UDP"))
CONVERGE = 15.0

# Runs inside the source pod's netns: exit 0 when the destination answered.
_PROBE = """
import socket, sys
ip, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if proto == "TCP":
    s = socket.create_connection((ip, port), timeout=1)
    s.settimeout(1)
    sys.exit(0 if s.recv(64) else 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
s.sendto(b"x", (ip, port))
sys.exit(0 if s.recvfrom(64)[0] else 1)
"""

DATA = load_cases()
pytestmark = pytest.mark.skipif(DATA is None, reason="no shared/conformance/netpol/cases.yaml")


@pytest.fixture(scope="module")
def model() -> Iterator[tuple[str, dict[str, str]]]:
    """A 2-node lab holding the model's namespaces and pods: (lab, pod -> IP)."""
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    assert DATA is not None
    spec = DATA["model"]
    name = f"tq{secrets.token_hex(2)}"
    try:
        pylium("lab", "up", "--name", name, "--nodes", "2")
        objects: list[dict[str, Any]] = [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {**(v.get("labels") or {}), NAME_LABEL: ns}},
            }
            for ns, v in spec["namespaces"].items()
        ]
        ports = [
            {"containerPort": port, "protocol": proto, "name": f"serve-{port}-{proto.lower()}"}
            for port in spec["serve"]["ports"]
            for proto in ("TCP", "UDP")
        ]
        for i, (key, pod) in enumerate(sorted(spec["pods"].items())):
            ns, pod_name = key.split("/")
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": pod_name, "namespace": ns, "labels": pod["labels"]},
                    "spec": {
                        "nodeName": record.node_name(name, 1 + i % 2),
                        "containers": [
                            {"name": "serve", "image": "pylium/podserver", "ports": ports}
                        ],
                    },
                }
            )
        apply(name, *objects)
        ips = {
            key: running_pod(name, key.split("/")[1], key.split("/")[0])["status"]["podIP"]
            for key in spec["pods"]
        }
        yield name, ips
    finally:
        pylium("lab", "down", "--name", name, "--force", check=False)
        assert leftovers(name) == {}


def reach(lab: str, src: str, ip: str, port: int, proto: str) -> bool:
    ns, pod = src.split("/")
    netns = paths.NETNS_DIR / record.pod_netns(lab, ns, pod)
    argv = ["nsenter", f"--net={netns}", "--", sys.executable, "-I", "-S", "-c", _PROBE]
    proc = subprocess.run([*argv, ip, str(port), proto], capture_output=True, timeout=10)
    return proc.returncode == 0


def mismatches(
    lab: str, ips: dict[str, str], expected: dict[str, list[str]], port: int, proto: str
) -> list[str]:
    """Pairs whose result differs from the table, the whole matrix probed again until one
    round matches (a pair that matched while the policy was still landing counts only then)
    or CONVERGE seconds passed."""
    pairs = [(s, d) for s in sorted(ips) for d in sorted(ips) if s != d]
    deadline = time.monotonic() + CONVERGE
    with ThreadPoolExecutor(16) as pool:
        while True:
            got = pool.map(lambda p: reach(lab, p[0], ips[p[1]], port, proto), pairs)
            wrong = [
                (s, d) for (s, d), ok in zip(pairs, got, strict=True) if ok != (d in expected[s])
            ]
            if not wrong or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    return [f"{s} -> {d} {port}/{proto}: want {d in expected[s]}" for s, d in wrong]


@pytest.mark.parametrize("case_id", CASES)
def test_that_the_datapath_matches_the_truth_table(model, case_id):
    assert DATA is not None
    lab, ips = model
    case = next(c for c in DATA["cases"] if c["id"] == case_id)
    policies = case.get("policies") or []
    apply(lab, *policies)
    try:
        wrong = []
        for probe in case["probes"]:
            if (probe["port"], probe["protocol"]) in PROBES:
                wrong += mismatches(lab, ips, probe["expected"], probe["port"], probe["protocol"])
        assert wrong == [], f"{case_id} {case['name']}"
    finally:
        for policy in policies:
            meta = policy["metadata"]
            pylium("--lab", lab, "delete", "networkpolicy", meta["name"], "-n", meta["namespace"])
