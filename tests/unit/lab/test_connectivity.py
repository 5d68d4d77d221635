"""The connectivity test's scenarios and verdicts, against a made-up deployment and prober:
selection by regex (`!` excludes), skips on one node, wrong answers fail, affinity needs one
answer, a refusal is not a timeout."""

from __future__ import annotations

from typing import Any

from pylium.lab.connectivity.deploy import AFFINITY, LOCAL, NO_BACKENDS, Deployment
from pylium.lab.connectivity.policy import WITHOUT_POLICY
from pylium.lab.connectivity.runner import ScenarioResult, run_scenarios, select
from pylium.lab.connectivity.scenarios import SCENARIOS, Action
from pylium.lab.record import LabRecord
from pylium.store import Object


class _NoPolicies:
    """Policies for runs without a policy scenario: any use is a bug."""

    def apply(self, objs: list[Object]) -> None:
        raise AssertionError(f"applied {objs}")

    def remove(self, objs: list[Object]) -> None:
        raise AssertionError(f"removed {objs}")


NO_POLICIES = _NoPolicies()


def _pod(ip: str, node: int) -> dict[str, Any]:
    return {"spec": {"nodeName": f"t1-node{node}"}, "status": {"podIP": ip}}


def _deployment(nodes: int) -> Deployment:
    pods = {"client": _pod("10.244.0.2", 1), "echo-same-node": _pod("10.244.0.3", 1)}
    if nodes > 1:
        pods["echo-other-node"] = _pod("10.244.1.2", 2)
    return Deployment(
        lab=LabRecord.new("t1", nodes),
        pods=pods,
        host_ips={f"t1-node{i}": f"192.168.64.{i + 1}" for i in range(1, nodes + 1)},
        service_ips={"echo-same-node": "10.96.0.1"},
    )


def _answers(table: dict[tuple[str, int, str], str]) -> Any:
    def probe(_d: Deployment, a: Action) -> dict[str, Any]:
        answer = table.get((a.dest, a.port, a.protocol))
        return {"ok": answer is not None, "answer": answer, "reason": None if answer else "timeout"}

    return probe


def test_select_filters_by_regex() -> None:
    assert [s.name for s in select(None)] == [
        "pod-to-pod-same-node",
        "pod-to-pod-other-node",
        "pod-to-service",
        "pod-to-nodeport",
        "world-to-nodeport",
        "world-to-loadbalancer",
        "world-to-externalip",
        "world-to-local-nodeport",
        "session-affinity",
        "service-without-backends",
        "pod-to-world",
        "pod-to-host",
        "client-egress",
        "echo-ingress",
        "echo-ingress-deny",
        "client-egress-to-entities-world",
        "client-egress-to-entities-cluster",
        "client-egress-to-cidr",
    ]
    assert select(WITHOUT_POLICY) == SCENARIOS
    assert [s.name for s in select("other|host$")] == ["pod-to-pod-other-node", "pod-to-host"]
    assert select("^nothing$") == []


def test_verdicts_on_a_two_node_deployment() -> None:
    probe = _answers(
        {
            ("10.244.0.3", 8080, "tcp"): "echo-same-node",
            ("10.244.0.3", 8053, "udp"): "echo-same-node",
            ("10.244.1.2", 8080, "tcp"): "echo-other-node",
            ("10.244.1.2", 8053, "udp"): "someone-else",
            ("10.96.0.1", 8080, "tcp"): "echo-same-node",
            ("10.96.0.1", 8053, "udp"): "echo-same-node",
            ("192.168.64.2", 4240, "tcp"): "t1-node1-host",
            ("192.168.64.3", 4240, "tcp"): "t1-node2-host",
        }
    )
    seen: list[str] = []

    def on_result(r: ScenarioResult) -> None:
        seen.append(r.name)

    results = run_scenarios(_deployment(2), list(SCENARIOS), probe, on_result, NO_POLICIES)
    assert seen == [r.name for r in results]
    by_name = {r.name: r for r in results}
    assert {n: r.status for n, r in by_name.items()} == {
        "pod-to-pod-same-node": "passed",
        "pod-to-pod-other-node": "failed",
        "pod-to-service": "passed",
        # No LoadBalancer service in this made-up deployment: nothing to probe.
        "pod-to-nodeport": "skipped",
        "world-to-nodeport": "skipped",
        "world-to-loadbalancer": "skipped",
        "world-to-externalip": "skipped",
        "world-to-local-nodeport": "skipped",
        "session-affinity": "skipped",
        "service-without-backends": "skipped",
        "pod-to-world": "failed",
        "pod-to-host": "passed",
    }
    other = by_name["pod-to-pod-other-node"]
    assert [a.ok for a in other.actions] == [True, False]
    assert other.actions[1].reason == "answered 'someone-else', expected 'echo-other-node'"
    world = by_name["pod-to-world"]
    assert [(a.destination, a.port, a.protocol, a.reason) for a in world.actions] == [
        ("203.0.113.1", 80, "tcp", "timeout"),
        ("203.0.113.1", 53, "udp", "timeout"),
    ]


def test_one_node_skips_the_other_node_scenario() -> None:
    results = run_scenarios(
        _deployment(1), select("pod-to-pod"), _answers({}), lambda _r: None, NO_POLICIES
    )
    assert [(r.name, r.status) for r in results] == [
        ("pod-to-pod-same-node", "failed"),
        ("pod-to-pod-other-node", "skipped"),
    ]
    assert results[1].actions == []


def _service_deployment(kube_proxy_replacement: bool) -> Deployment:
    d = _deployment(2)
    d.lab.kubeProxyReplacement = kube_proxy_replacement
    d.service_ips |= {AFFINITY: "10.96.0.8", NO_BACKENDS: "10.96.0.9"}
    d.node_ports = {"echo-same-node": (30001, 30000)}
    d.lb_ips = {"echo-same-node": "198.51.100.1"}
    return d


def test_affinity_needs_one_backend_and_no_backends_needs_a_refusal() -> None:
    turns = iter(["echo-same-node", "echo-same-node", "echo-other-node"] * 10)

    def probe(_d: Deployment, a: Action) -> dict[str, Any]:
        if a.dest == "10.96.0.8":
            return {"ok": True, "answer": next(turns), "reason": None}
        if (a.dest, a.protocol) == ("10.96.0.9", "tcp"):
            return {"ok": False, "answer": None, "reason": "refused"}
        return {"ok": False, "answer": None, "reason": "timeout"}

    d = _service_deployment(kube_proxy_replacement=False)
    results = run_scenarios(d, select("affinity|without"), probe, lambda _r: None, NO_POLICIES)
    affinity, none = results
    assert affinity.status == "failed"
    assert [a.ok for a in affinity.actions[:3]] == [True, True, False]
    assert affinity.actions[2].reason == (
        "answered 'echo-other-node' after 'echo-same-node': no affinity"
    )
    assert none.status == "failed"
    assert [(a.protocol, a.ok, a.reason) for a in none.actions] == [
        ("tcp", True, "refused"),
        ("udp", False, "timeout, expected refused"),
    ]


def test_world_scenarios_probe_every_node_and_the_lb_ip_from_the_world() -> None:
    def nothing(_d: Deployment, _a: Action) -> dict[str, Any]:
        return {"ok": False, "answer": None, "reason": "timeout"}

    for ebpf in (True, False):
        d = _service_deployment(kube_proxy_replacement=ebpf)
        world, lb = run_scenarios(
            d, select("world-to-(nodeport|load)"), nothing, print, NO_POLICIES
        )
        assert {a.source for a in world.actions + lb.actions} == {"world"}
        # Every node x (TCP, UDP) NodePort of the one echo service; its LB IP on the echo ports.
        assert [(a.destination, a.port) for a in world.actions] == [
            ("192.168.64.2", 30001), ("192.168.64.2", 30000),
            ("192.168.64.3", 30001), ("192.168.64.3", 30000),
        ]  # fmt: skip
        assert [(a.destination, a.port) for a in lb.actions] == [
            ("198.51.100.1", 8080),
            ("198.51.100.1", 8053),
        ]
        assert world.status == "failed"


def test_pod_to_nodeport_probes_the_clients_node_and_one_other() -> None:
    d = _service_deployment(kube_proxy_replacement=True)
    d.host_ips["t1-node3"] = "192.168.64.4"
    (result,) = run_scenarios(
        d, select("pod-to-nodeport"), _answers({}), lambda _r: None, NO_POLICIES
    )
    assert [(a.source, a.destination, a.port) for a in result.actions] == [
        ("client", "192.168.64.2", 30001), ("client", "192.168.64.2", 30000),
        ("client", "192.168.64.3", 30001), ("client", "192.168.64.3", 30000),
    ]  # fmt: skip
    assert result.status == "failed"


def test_local_nodeport_answers_on_its_node_with_the_world_address_and_drops_elsewhere() -> None:
    d = _service_deployment(kube_proxy_replacement=False)
    d.local_node_port, d.service_backends = 30005, {LOCAL: "echo-other-node"}
    seen: list[Action] = []

    def probe(_d: Deployment, a: Action) -> dict[str, Any]:
        seen.append(a)
        if a.dest == "192.168.64.3":
            return {"ok": True, "answer": "echo-other-node peer=192.168.64.1", "reason": None}
        return {"ok": False, "answer": None, "reason": "timeout"}

    (result,) = run_scenarios(d, select("local-nodeport"), probe, lambda _r: None, NO_POLICIES)
    assert result.status == "passed"
    assert {(a.source, a.dest, a.port, a.show_peer) for a in seen} == {
        ("world", "192.168.64.2", 30005, True),
        ("world", "192.168.64.3", 30005, True),
    }

    # A SNATed answer (the node's address instead of the world's) fails.
    def snat(_d: Deployment, a: Action) -> dict[str, Any]:
        answer = "echo-other-node peer=10.244.1.1" if a.dest == "192.168.64.3" else None
        return {"ok": bool(answer), "answer": answer, "reason": None if answer else "timeout"}

    (result,) = run_scenarios(d, select("local-nodeport"), snat, lambda _r: None, NO_POLICIES)
    assert [a.reason for a in result.actions] == [
        "timeout",
        "answered 'echo-other-node peer=10.244.1.1', expected 'echo-other-node peer=192.168.64.1'",
    ]
