"""`pylium bench policy`: how long policy computation takes at scale, in this process.

A synthetic cluster goes through the real `Repository` (selector cache, `compute`, map
state): 30 namespaces, 3 000 pods with a label unique to each (3 000 identities), and 1 000
rules of the mix clusters use: Kubernetes ingress from pod selectors on one port, ingress from
namespace selectors on a port range, Cilium ingress by label expressions, Cilium egress to pods
on UDP 53, ingressDeny, and clusterwide egress to the world and cluster entities.

- Full computation: one endpoint's policy from every rule (`compute`, what an endpoint's
  first sync needs), sampled over endpoints; and the whole repository's recompute.
- Incremental: one pod with a new identity added (selector cache update + recompute), and one
  policy with one rule added.
- Map entries: rows per endpoint in the policy maps for this policy set.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from pylium.api import validate
from pylium.policy.compute import compute
from pylium.policy.repository import Repository

NAMESPACES = 30
PODS = 3_000
RULES = 1_000
APPS = 20
GOAL_MS = 100.0
"""The issue's goal for a computation."""
SEED = 7

Object = dict[str, Any]


@dataclass(frozen=True)
class Timing:
    """Milliseconds over `runs` runs."""

    runs: int
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class ComputeReport:
    """Policy computation figures."""

    pods: int
    identities: int
    rules: int
    load_s: float
    """Feeding every namespace, pod and policy into an empty repository."""
    endpoint_full: Timing
    repository_full: Timing
    add_identity: Timing
    add_rule: Timing
    entries_p50: int
    entries_max: int
    entries_mean: float


def _ns(i: int) -> str:
    return f"ns-{i}"


def namespaces() -> list[Object]:
    """The namespaces, labelled by team and environment."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": _ns(i),
                "labels": {"team": f"t{i % 5}", "env": "prod" if i % 2 else "dev"},
            },
        }
        for i in range(NAMESPACES)
    ]


def pod(i: int) -> Object:
    """Pod i: its namespace, app, tier, and a label of its own (one identity per pod)."""
    ip = f"10.{1 + i // 65_000}.{i // 250 % 256}.{i % 250 + 1}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"pod-{i}",
            "namespace": _ns(i % NAMESPACES),
            "labels": {
                "app": f"app-{i % APPS}",
                "tier": ("fe", "be", "db")[i % 3],
                "instance": f"i{i}",
            },
        },
        "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 80}]}]},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
    }


def _app(rng: random.Random) -> dict[str, Any]:
    return {"matchLabels": {"app": f"app-{rng.randrange(APPS)}"}}


def policy(i: int, rng: random.Random) -> Object:
    """Policy i (one rule) of the mix."""
    ns, name = _ns(i % NAMESPACES), f"pol-{i}"
    kind = i % 20
    if kind < 8:  # 40 %: K8s ingress from pods on TCP 80
        return _netpol(ns, name, _app(rng), [{"podSelector": _app(rng)}], [{"port": 80}])
    if kind < 11:  # 15 %: K8s ingress from namespaces on a port range
        peers = [{"namespaceSelector": {"matchLabels": {"team": f"t{rng.randrange(5)}"}}}]
        return _netpol(ns, name, _app(rng), peers, [{"port": 8000, "endPort": 8100}])
    cnp_spec: dict[str, Any]
    if kind < 14:  # 15 %: CNP ingress by label expressions on 443
        tiers = {"key": "tier", "operator": "In", "values": ["fe", "be"]}
        cnp_spec = {
            "endpointSelector": _app(rng),
            "ingress": [
                {
                    "fromEndpoints": [{"matchExpressions": [tiers]}],
                    "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
                }
            ],
        }
    elif kind < 17:  # 15 %: CNP egress to pods on UDP 53
        cnp_spec = {
            "endpointSelector": _app(rng),
            "egress": [
                {
                    "toEndpoints": [_app(rng)],
                    "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}]}],
                }
            ],
        }
    elif kind < 19:  # 10 %: ingressDeny from one app
        cnp_spec = {
            "endpointSelector": _app(rng),
            "ingressDeny": [{"fromEndpoints": [_app(rng)]}],
        }
    else:  # 5 %: clusterwide egress to entities
        return _validated(
            "CiliumClusterwideNetworkPolicy",
            {"name": name},
            {
                "endpointSelector": _app(rng),
                "egress": [{"toEntities": ["world", "cluster"]}],
            },
        )
    return _validated("CiliumNetworkPolicy", {"name": name, "namespace": ns}, cnp_spec)


def _netpol(
    ns: str, name: str, subject: dict[str, Any], peers: list[Object], ports: list[Object]
) -> Object:
    rule = {"from": peers, "ports": [{"protocol": "TCP", **p} for p in ports]}
    spec = {"podSelector": subject, "policyTypes": ["Ingress"], "ingress": [rule]}
    return validate(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }
    )


def _validated(kind: str, meta: Object, spec: Object) -> Object:
    return validate({"apiVersion": "cilium.io/v2", "kind": kind, "metadata": meta, "spec": spec})


def _timing(samples: list[float]) -> Timing:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return Timing(len(ordered), statistics.median(ordered) * 1000, p99 * 1000)


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run_compute(progress: Callable[[str], None], runs: int = 20) -> ComputeReport:
    """Build the synthetic cluster in a repository and time full and incremental computation."""
    rng = random.Random(SEED)
    repo = Repository()
    policies = [policy(i, rng) for i in range(RULES)]
    progress(f"loading {NAMESPACES} namespaces, {PODS} pods, {RULES} policies ...")
    start = time.perf_counter()
    for ns in namespaces():
        repo.set_namespace(ns)
    for i in range(PODS):
        repo.set_pod(pod(i))
    for obj in policies:
        repo.set_policy(obj)
    load_s = time.perf_counter() - start
    endpoints = repo.endpoints()
    rules = [r for rs in repo.rules().values() for r in rs]
    cluster_ports = {"http": frozenset([("TCP", 80)])}
    sample = rng.sample(sorted(endpoints.values(), key=lambda e: e.key), runs)
    progress("timing full computations ...")
    select, config = repo.selectors.selections, repo.config
    endpoint_full = [
        _timed(
            partial(compute, ep.identity, ep.labels, rules, select, ep.ports, cluster_ports, config)
        )
        for ep in sample
    ]
    repository_full = [_timed(repo.refresh)]
    progress("timing incremental updates ...")
    new_pods = [pod(n) for n in range(PODS, PODS + runs)]
    new_policies = [policy(n, rng) for n in range(RULES, RULES + runs)]
    add_identity = [_timed(partial(repo.set_pod, obj)) for obj in new_pods]
    add_rule = [_timed(partial(repo.set_policy, obj)) for obj in new_policies]
    sizes = sorted(len(repo.policy(k).entries) for k in repo.endpoints())
    return ComputeReport(
        pods=PODS,
        identities=len({e.identity for e in endpoints.values()}),
        rules=len(rules),
        load_s=load_s,
        endpoint_full=_timing(endpoint_full),
        repository_full=_timing(repository_full),
        add_identity=_timing(add_identity),
        add_rule=_timing(add_rule),
        entries_p50=sizes[len(sizes) // 2],
        entries_max=sizes[-1],
        entries_mean=statistics.fmean(sizes),
    )


def to_json(report: ComputeReport) -> dict[str, Any]:
    """The report as JSON-able data."""
    return asdict(report)


def render_text(report: ComputeReport) -> str:
    """The report as a table."""
    rows = [
        ("one endpoint, every rule", report.endpoint_full),
        ("whole repository recompute", report.repository_full),
        ("incremental: one identity added", report.add_identity),
        ("incremental: one rule added", report.add_rule),
    ]
    lines = [
        f"policy computation: {report.pods} pods, {report.identities} identities, "
        f"{report.rules} rules (loaded in {report.load_s:.1f} s)",
        f"{'computation':<34}{'runs':>6}{'p50 ms':>10}{'p99 ms':>10}",
    ]
    lines += [f"{name:<34}{t.runs:>6}{t.p50_ms:>10.1f}{t.p99_ms:>10.1f}" for name, t in rows]
    lines.append(
        f"policy map entries per endpoint: p50 {report.entries_p50}, "
        f"mean {report.entries_mean:.0f}, max {report.entries_max}"
    )
    return "\n".join(lines)
