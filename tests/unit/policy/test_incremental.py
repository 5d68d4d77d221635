"""The repository's incremental recompute (only endpoints whose rules or peers' selections
moved) gives the same policies as computing every endpoint from scratch."""

from __future__ import annotations

import random

import pytest

from pylium.api import validate
from pylium.bench import policy as bench
from pylium.identity.labels import Labels
from pylium.policy import IdentityNumbers, Repository
from pylium.policy.compute import compute


def _check_matches_full(repo: Repository) -> None:
    rules = [r for rs in repo.rules().values() for r in rs]
    endpoints = repo.endpoints()
    cluster_ports: dict[str, frozenset[tuple[str, int]]] = {}
    for ep in endpoints.values():
        for name, pairs in ep.ports.items():
            cluster_ports[name] = cluster_ports.get(name, frozenset()) | pairs
    for key, ep in endpoints.items():
        full = compute(
            ep.identity,
            ep.labels,
            rules,
            repo.selectors.selections,
            ep.ports,
            cluster_ports,
            repo.config,
        )
        assert repo.policy(key) == full, key
        assert repo.policy(key).by_peer == full.by_peer, key


def test_incremental_updates_equal_full_computation() -> None:
    """Pods added, relabelled and deleted, policies added and deleted (the bench's mix of
    selectors, ports, ranges, deny and entities), namespace labels changed: after each, every
    endpoint's policy equals a computation from scratch."""
    repo = Repository()
    rng = _load_bench_mix(repo, pods=90, policies=40, seed=1)
    _check_matches_full(repo)
    for step in range(60):
        action = step % 5
        if action == 0:
            repo.set_pod(bench.pod(90 + step))
        elif action == 1:
            pod = bench.pod(rng.randrange(90))
            pod["metadata"]["labels"]["app"] = f"app-{rng.randrange(bench.APPS)}"
            repo.set_pod(pod)
        elif action == 2:
            repo.set_policy(bench.policy(40 + step, rng))
        elif action == 3:
            victim = rng.choice(sorted(repo.rules(), key=str))
            repo.delete_policy(victim.kind, victim.namespace, victim.name)
        else:
            ns = rng.choice(bench.namespaces())
            ns["metadata"]["labels"]["team"] = f"t{rng.randrange(5)}"
            repo.set_namespace(ns)
            repo.delete_pod(bench._ns(step % bench.NAMESPACES), f"pod-{step}")
        _check_matches_full(repo)


def test_policy_bench_runs_and_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pylium bench policy`'s computation part at a small scale: every figure is there."""
    monkeypatch.setattr(bench, "PODS", 60)
    monkeypatch.setattr(bench, "RULES", 40)
    report = bench.run_compute(lambda _line: None, runs=3)
    assert (report.pods, report.identities, report.rules) == (60, 60, 40)
    assert report.add_identity.runs == report.add_rule.runs == 3
    assert report.entries_p50 <= report.entries_max and report.entries_max > 0
    text = bench.render_text(report)
    assert "one identity added (agent, 2 local endpoints)" in text and "map entries" in text
    assert report.local_endpoints == 2 and report.add_identity_all.runs == 3


TO_CLUSTER = validate(
    {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": "to-cluster"},
        "spec": {"endpointSelector": {}, "egress": [{"toEntities": ["cluster"]}]},
    }
)


def _load_bench_mix(repo: Repository, pods: int, policies: int, seed: int) -> random.Random:
    """The bench's namespaces, its first pods (on 30 nodes) and policies; returns the rng."""
    rng = random.Random(seed)
    for ns in bench.namespaces():
        repo.set_namespace(ns)
    for i in range(pods):
        repo.set_pod(bench.pod(i))
    for i in range(policies):
        repo.set_policy(bench.policy(i, rng))
    return rng


def test_an_agent_computes_its_node_s_endpoints_and_those_asked_for() -> None:
    """With `node`, only that node's pods get policies (the others are peers); one asked for
    is computed then and kept current; every policy equals a computation from scratch."""
    repo = Repository(node="node-0")
    heard: set[str] = set()
    repo.subscribe(heard.update)
    _load_bench_mix(repo, pods=150, policies=30, seed=2)
    local = {k for k, ep in repo.endpoints().items() if ep.node == "node-0"}
    assert heard == local and len(local) == 5
    other = "ns-1/pod-1"  # on node-1
    asked = repo.policy(other)
    heard.clear()
    repo.set_policy(TO_CLUSTER)  # selects every pod
    assert heard == local | {other} and repo.policy(other) != asked
    heard.clear()
    repo.set_pod(bench.pod(151))  # on node-1: a new peer of every pod
    assert heard == local | {other}
    _check_matches_full(repo)


class _Renumbered:
    """A numbering that learns new numbers for label sets (an allocator catching up)."""

    def __init__(self) -> None:
        self.numbers = IdentityNumbers()
        self.moved: dict[object, int] = {}

    def number(self, labels: Labels) -> int:
        return self.moved.get(labels) or self.numbers.number(labels)


def test_refresh_rederives_only_renumbered_endpoints_and_their_peers() -> None:
    """`refresh` after the numbering changed one label set's number: that endpoint gets the
    new identity, every policy naming it as a peer follows, the rest are left alone."""
    numbering = _Renumbered()
    repo = Repository(numbers=numbering)
    _load_bench_mix(repo, pods=60, policies=40, seed=3)
    target = repo.endpoints()["ns-5/pod-5"]
    numbering.moved[target.labels] = 90_000
    heard: dict[str, object] = {}
    repo.subscribe(heard.update)

    repo.refresh()

    assert repo.endpoints()["ns-5/pod-5"].identity == 90_000
    naming = {k for k in heard if 90_000 in repo.policy(k).by_peer}
    assert naming and all(target.identity not in repo.policy(k).by_peer for k in repo.endpoints())
    assert set(heard) == naming | {"ns-5/pod-5"}  # its own policy carries its identity
    _check_matches_full(repo)
