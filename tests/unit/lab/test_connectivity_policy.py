"""The connectivity test's policy scenarios against a made-up cluster that enforces a policy a
probe after it is applied: each scenario applies its policy, waits until the probes that must be
dropped are, probes what it allows, removes the policy and waits until it is open again, one
scenario at a time after the others; a policy never enforced, or never lifted, fails the
scenario (and is removed all the same)."""

from __future__ import annotations

from typing import Any

import pytest

from pylium.lab.connectivity import runner
from pylium.lab.connectivity.deploy import Deployment
from pylium.lab.connectivity.policy import DENY_TIMEOUT, POLICY_SCENARIOS
from pylium.lab.connectivity.runner import ScenarioResult, run_scenarios, select
from pylium.lab.connectivity.scenarios import DROPPED, Action
from pylium.lab.record import LabRecord
from pylium.store import Object


def _deployment() -> Deployment:
    def pod(ip: str, node: int) -> dict[str, Any]:
        return {"spec": {"nodeName": f"t1-node{node}"}, "status": {"podIP": ip}}

    return Deployment(
        lab=LabRecord.new("t1", 2),
        pods={
            "client": pod("10.244.0.2", 1),
            "echo-same-node": pod("10.244.0.3", 1),
            "echo-other-node": pod("10.244.1.2", 2),
        },
        host_ips={"t1-node1": "192.168.64.2", "t1-node2": "192.168.64.3"},
        lb_ips={"echo-same-node": "198.51.100.1", "echo-other-node": "198.51.100.2"},
        gateway_ip="192.168.64.1",
    )


class Cluster:
    """Policies and a prober: a policy's drops start with the second probe after it is applied
    (`enforce`) and stop with the second probe after its removal (`lift`)."""

    def __init__(self, enforce: bool = True, lift: bool = True) -> None:
        self.enforce, self.lift = enforce, lift
        self.log: list[str] = []
        self.applied: set[str] = set()
        self.probes_since_change = 0
        self.seen: list[Action] = []

    def apply(self, objs: list[Object]) -> None:
        self.log += [f"apply {o['kind']}/{o['metadata']['name']}" for o in objs]
        self.applied = {o["metadata"]["name"] for o in objs}
        self.probes_since_change = 0

    def remove(self, objs: list[Object]) -> None:
        self.log += [f"remove {o['kind']}/{o['metadata']['name']}" for o in objs]
        self.applied = set()
        self.probes_since_change = 0

    def probe(self, _d: Deployment, a: Action) -> dict[str, Any]:
        self.seen.append(a)
        self.probes_since_change += 1
        settled = self.probes_since_change > 1
        enforced = (self.enforce and settled) if self.applied else not (self.lift and settled)
        if a.expect == DROPPED and enforced:
            return {"ok": False, "answer": None, "reason": "timeout"}
        answer = a.expect if isinstance(a.expect, str) else "open"
        return {"ok": True, "answer": answer, "reason": None}


def _run(cluster: Cluster, pattern: str | None = None) -> list[ScenarioResult]:
    return run_scenarios(_deployment(), select(pattern), cluster.probe, lambda _r: None, cluster)


def test_each_policy_scenario_passes_once_enforced_and_removes_its_policy() -> None:
    cluster = Cluster()
    results = _run(cluster, "|".join(f"^{s.name}$" for s in POLICY_SCENARIOS))
    assert {r.name: r.status for r in results} == {s.name: "passed" for s in POLICY_SCENARIOS}
    # One at a time: each policy removed before the next is applied.
    assert cluster.log == [
        f"{op} {kind}/{s.name}"
        for s, kind in zip(
            POLICY_SCENARIOS,
            ["CiliumNetworkPolicy", "NetworkPolicy", *["CiliumNetworkPolicy"] * 4],
            strict=True,
        )
        for op in ("apply", "remove")
    ]
    assert cluster.applied == set()
    for r in results:
        assert [a.ok for a in r.actions] == [True, True], r
        assert {a.reason for a in r.actions} == {None, "timeout"}, r
    # What must be dropped waits DENY_TIMEOUT; what must answer, the usual time.
    assert {a.timeout for a in cluster.seen if a.expect == DROPPED} == {DENY_TIMEOUT}
    assert all(a.timeout > DENY_TIMEOUT for a in cluster.seen if a.expect != DROPPED)


def test_policy_scenarios_run_after_the_others() -> None:
    cluster = Cluster()
    reported: list[str] = []
    chosen = select("^(client-egress|pod-to-world|echo-ingress)$")
    assert [s.name for s in chosen] == ["pod-to-world", "client-egress", "echo-ingress"]
    run_scenarios(_deployment(), chosen, cluster.probe, lambda r: reported.append(r.name), cluster)
    assert reported == ["pod-to-world", "client-egress", "echo-ingress"]
    # pod-to-world probed before any policy went in.
    assert cluster.seen[0].dest == "203.0.113.1" and cluster.seen[1].dest == "203.0.113.1"


def test_a_policy_never_enforced_fails_and_is_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "POLICY_TIMEOUT", 0.3)
    cluster = Cluster(enforce=False)
    (result,) = _run(cluster, "^client-egress$")
    assert result.status == "failed"
    assert [(a.target, a.ok, a.reason) for a in result.actions] == [
        ("echo-same-node", True, None),
        ("echo-other-node", False, "answered 'open', expected timeout"),
    ]
    assert cluster.log[-1] == "remove CiliumNetworkPolicy/client-egress"


def test_a_policy_still_enforced_after_removal_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "POLICY_TIMEOUT", 0.3)
    (result,) = _run(Cluster(lift=False), "^client-egress-to-cidr$")
    assert result.status == "failed"
    assert [(a.target, a.ok, a.reason) for a in result.actions] == [
        ("gateway", True, None),
        ("world", True, "timeout"),
        ("world after the policy's removal", False, "timeout 0s after"),
    ]


def test_policy_scenarios_skip_without_a_second_node() -> None:
    d = _deployment()
    del d.pods["echo-other-node"]
    cluster = Cluster()
    results = run_scenarios(d, select("-(egress|ingress)$"), cluster.probe, print, cluster)
    assert {r.name: r.status for r in results} == {
        "client-egress": "skipped",
        "echo-ingress": "skipped",
    }
    assert cluster.log == []
