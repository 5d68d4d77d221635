"""The repository's incremental recompute (only endpoints whose rules or peers' selections
moved) gives the same policies as computing every endpoint from scratch."""

from __future__ import annotations

import random

import pytest

from pylium.bench import policy as bench
from pylium.policy import Repository
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
    rng = random.Random(1)
    repo = Repository()
    for ns in bench.namespaces():
        repo.set_namespace(ns)
    for i in range(90):
        repo.set_pod(bench.pod(i))
    for i in range(40):
        repo.set_policy(bench.policy(i, rng))
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
    assert "incremental: one identity added" in text and "map entries" in text
