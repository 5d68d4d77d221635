"""The service matrix: `pylium connectivity test` in a 3-node lab of each routing mode (tunnel,
native) x service mode (eBPF kube-proxy replacement, kube-proxy iptables, kube-proxy nftables),
one lab at a time. Every scenario runs and passes (a failure prints the table). The policy
scenarios run in POLICY_CELLS only (they add ~4 s a run; with test_multinode's native eBPF lab
they cover both routing modes with eBPF and both kube-proxy modes). From the world, a kube-proxy
node SNATs to its router IP, and `pylium probe --from-world --show-peer` shows it."""

from __future__ import annotations

import ipaddress
import json
import os
from typing import Any

import pytest

from pylium.lab import record
from pylium.lab.connectivity.policy import POLICY_SCENARIOS, WITHOUT_POLICY
from tests.lab.conftest import leftovers, pylium, store_get, unique_lab

CELLS = [
    (routing, mode) for routing in ("tunnel", "native") for mode in ("ebpf", "iptables", "nftables")
]
POLICY_CELLS = {("tunnel", "ebpf"), ("tunnel", "iptables"), ("native", "nftables")}


def table(report: dict[str, Any]) -> str:
    """One line per scenario, and each failed probe under it."""
    lines = []
    for s in report["scenarios"]:
        lines.append(f"{s['status']:8} {s['name']}")
        lines += [
            f"         {a['source']} -> {a['target']} {a['destination']}:{a['port']}/"
            f"{a['protocol']}: {a['reason']}"
            for a in s["actions"]
            if not a["ok"]
        ]
    return "\n".join(lines)


@pytest.mark.parametrize(("routing", "mode"), CELLS, ids=[f"{r}-{m}" for r, m in CELLS])
def test_every_service_scenario_passes(routing: str, mode: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    name = unique_lab()
    up = ["lab", "up", "--name", name, "--nodes", "3", "--routing", routing]
    if mode != "ebpf":
        up += ["--kube-proxy-replacement", "false", "--kube-proxy-mode", mode]
    try:
        pylium(*up)
        test = [] if (routing, mode) in POLICY_CELLS else ["--test", WITHOUT_POLICY]
        proc = pylium("--lab", name, "connectivity", "test", *test, "-o", "json", check=False)
        report = json.loads(proc.stdout)
        shown = f"{routing} x {mode}:\n{table(report)}\n{proc.stderr}"
        print(shown)
        statuses = {s["name"]: s["status"] for s in report["scenarios"]}
        assert "skipped" not in statuses.values(), shown
        assert ({s.name for s in POLICY_SCENARIOS} <= set(statuses)) == (not test), shown
        failed = [s["name"] for s in report["scenarios"] if s["status"] != "passed"]
        assert failed == [], shown
        if mode != "ebpf":
            # The LB pool is routed to node 1, which SNATs to its router IP (ProxyParams.snat_ip).
            lab = record.load(name)
            assert lab is not None
            router = str(ipaddress.ip_network(lab.nodes[0].podCIDR)[1])
            svc = store_get(name, "Service", "echo-other-node", "pylium-test")
            assert svc is not None
            ingress = svc["status"]["loadBalancer"]["ingress"][0]["ip"]
            seen = pylium("--lab", name, "probe", "--from-world", f"{ingress}:8080",
                          "--show-peer", "-o", "json")  # fmt: skip
            assert json.loads(seen.stdout)["answer"] == f"echo-other-node peer={router}"
    finally:
        pylium("lab", "down", "--name", name, "--force", check=False)
        assert leftovers(name) == {}
