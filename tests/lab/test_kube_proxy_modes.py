"""kube-proxy mode (`--kube-proxy-replacement false`) in a one-node lab, in iptables mode and
in nftables mode: the agent writes kube-proxy's rules into the node's namespace only (never the
root one), a pod reaches both backends of a Service through the ClusterIP by the kernel's DNAT,
`pylium connectivity test` passes, and deleting the Service removes its rules (incremental)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from pylium.lab import record
from pylium.lab.connectivity.policy import WITHOUT_POLICY
from tests.lab.conftest import apply, leftovers, pylium, running_pod
from tests.lab.test_services import CLIENT, cluster_ip, probe, service, web_pod
from tests.support import wait_for

LISTING = {
    "iptables": ["iptables-save", "-t", "nat"],
    "nftables": ["nft", "list", "ruleset"],
}
MARKER = {"iptables": "KUBE-SERVICES", "nftables": "table ip kube-proxy"}


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def kp_lab(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """A one-node lab in kube-proxy mode `request.param`, removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    mode = str(request.param)
    name = f"tv{os.urandom(3).hex()}"
    try:
        pylium("lab", "up", "--name", name, "--kube-proxy-replacement", "false",
               "--kube-proxy-mode", mode)  # fmt: skip
        yield name, mode
    finally:
        pylium("lab", "down", "--name", name, "--force", check=False)
        assert leftovers(name) == {}


def node_rules(lab: str, mode: str) -> str:
    ns = record.node_netns(lab, 1)
    argv = ["nsenter", f"--net=/var/run/netns/{ns}", "--", *LISTING[mode]]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def test_a_service_answers_from_both_pods_through_kube_proxy_rules(
    kp_lab: tuple[str, str],
) -> None:
    lab, mode = kp_lab
    apply(lab, web_pod("web-a"), web_pod("web-b"), CLIENT, service("web", "web"))
    for name in ("web-a", "web-b", "client"):
        running_pod(lab, name)
    ip = cluster_ip(lab, "web")
    assert wait_for(lambda: ip in node_rules(lab, mode), timeout=15, interval=0.1)
    assert MARKER[mode] in node_rules(lab, mode)
    root = subprocess.run(LISTING[mode], capture_output=True, text=True).stdout
    assert ip not in root

    seen: set[str] = set()
    failures: list[dict[str, object]] = []

    def both() -> bool:
        result = probe(lab, f"{ip}:80")
        if result["ok"]:
            seen.add(result["answer"])
        else:
            failures.append(result)
        return seen == {"web-a", "web-b"}

    try:  # random DNAT: both answer soon
        wait_for(both, timeout=30, interval=0.05)
    except AssertionError:
        raise AssertionError(f"answered: {seen}; failures: {failures[-3:]}") from None
    assert probe(lab, f"{ip}:53", "udp")["answer"] in {"web-a", "web-b"}

    # The policy scenarios run in the service matrix.
    args = ("--lab", lab, "connectivity", "test", "--test", WITHOUT_POLICY, "-o", "json")
    result = pylium(*args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    scenarios = {s["name"]: s["status"] for s in json.loads(result.stdout)["scenarios"]}
    assert scenarios["pod-to-service"] == "passed"

    pylium("--lab", lab, "delete", "service", "web")
    assert wait_for(lambda: ip not in node_rules(lab, mode), timeout=15, interval=0.1)
    assert not probe(lab, f"{ip}:80")["ok"]
