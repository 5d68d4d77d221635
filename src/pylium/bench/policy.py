"""`pylium bench policy`: how long policy computation takes at scale, in this process.

A synthetic cluster goes through the real `Repository` (selector cache, `compute`, map
state): 30 namespaces, 3 000 pods with a label unique to each (3 000 identities), and 1 000
rules of the mix clusters use: Kubernetes ingress from pod selectors on one port, ingress from
namespace selectors on a port range, Cilium ingress by label expressions, Cilium egress to pods
on UDP 53, ingressDeny, and clusterwide egress to the world and cluster entities.

The pods are spread over 30 nodes (100 each). Two repositories take the same objects: an
agent's, which computes its node's 100 endpoints (the rest are peers), and one computing every
endpoint (what `pylium policy trace` and a single-node cluster would need).

- Load: every object fed in one batch and the endpoints' policies computed (a first sync).
- Full computation: one endpoint's policy from every rule (`compute`, what a new endpoint or
  a changed rule needs), sampled over endpoints.
- Incremental: one pod with a new identity added (selector cache update + recompute), and one
  policy with one rule added, in each repository.
- Map entries: rows per endpoint in the policy maps for this policy set.

With `--lab`: apply-to-enforced in a 3-node lab (`run_enforce`): the time from launching
`pylium apply` of a policy until every node's pinned `pylium_policy_ep` shows its web pod
ingress-enforced (the agent writes an endpoint's rows before its flags, so the flag means the
rows are in), polled every 2 ms; the policy is deleted and the flags gone between runs.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from pylium.api import validate
from pylium.bench.scratch import unique_name
from pylium.datapath.lxc import MAP_POLICY_EP
from pylium.datapath.maps import RawMap
from pylium.datapath.policy import FLAG_INGRESS, EndpointFlags
from pylium.lab import record
from pylium.lab.down import down
from pylium.lab.up import up
from pylium.paths import BPFFS_ROOT
from pylium.policy.compute import compute
from pylium.policy.repository import Repository, load

NAMESPACES = 30
PODS = 3_000
NODES = 30
AGENT_NODE = "node-0"
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
    local_endpoints: int
    """Endpoints on the agent's node."""
    load_s: float
    """Feeding every namespace, pod and policy into an agent's empty repository in one batch
    and computing its node's endpoints' policies (its first sync)."""
    load_all_s: float
    """The same, computing every endpoint's policy."""
    endpoint_full: Timing
    add_identity: Timing
    add_rule: Timing
    """In the agent's repository."""
    add_identity_all: Timing
    add_rule_all: Timing
    """In the repository computing every endpoint."""
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
        "spec": {
            "nodeName": f"node-{i % NODES}",
            "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 80}]}],
        },
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
    """Build the synthetic cluster in two repositories (an agent's, one computing every
    endpoint) and time full and incremental computation."""
    rng = random.Random(SEED)
    policies = [policy(i, rng) for i in range(RULES)]
    objects = [*namespaces(), *(pod(i) for i in range(PODS)), *policies]
    new_pods = [pod(n) for n in range(PODS, PODS + runs)]
    new_policies = [policy(n, rng) for n in range(RULES, RULES + runs)]
    repos = [Repository(node=AGENT_NODE), Repository()]
    loads: list[float] = []
    for repo, whose in zip(repos, ("the agent's", "every endpoint's"), strict=True):
        progress(
            f"loading {NAMESPACES} namespaces, {PODS} pods, {RULES} policies ({whose} policies) ..."
        )
        loads.append(_timed(partial(load, repo, objects)))
    agent, every = repos
    local = sum(1 for e in agent.endpoints().values() if e.node == AGENT_NODE)
    endpoints = every.endpoints()
    rules = [r for rs in every.rules().values() for r in rs]
    sizes = sorted(every.policy(k).size for k in endpoints)
    cluster_ports = {"http": frozenset([("TCP", 80)])}
    sample = rng.sample(sorted(endpoints.values(), key=lambda e: e.key), runs)
    progress("timing full computations ...")
    select, config = every.selectors.selections, every.config
    endpoint_full = [
        _timed(
            partial(compute, ep.identity, ep.labels, rules, select, ep.ports, cluster_ports, config)
        )
        for ep in sample
    ]
    progress("timing incremental updates ...")
    adds = [
        (
            _timing([_timed(partial(repo.set_pod, obj)) for obj in new_pods]),
            _timing([_timed(partial(repo.set_policy, obj)) for obj in new_policies]),
        )
        for repo in repos
    ]
    return ComputeReport(
        pods=PODS,
        identities=len({e.identity for e in endpoints.values()}),
        rules=len(rules),
        local_endpoints=local,
        load_s=loads[0],
        load_all_s=loads[1],
        endpoint_full=_timing(endpoint_full),
        add_identity=adds[0][0],
        add_rule=adds[0][1],
        add_identity_all=adds[1][0],
        add_rule_all=adds[1][1],
        entries_p50=sizes[len(sizes) // 2],
        entries_max=sizes[-1],
        entries_mean=statistics.fmean(sizes),
    )


def to_json(report: ComputeReport) -> dict[str, Any]:
    """The report as JSON-able data."""
    return asdict(report)


def render_text(report: ComputeReport) -> str:
    """The report as a table."""
    local = f"agent, {report.local_endpoints} local endpoints"
    rows = [
        ("one endpoint, every rule", report.endpoint_full),
        (f"one identity added ({local})", report.add_identity),
        (f"one rule added ({local})", report.add_rule),
        ("one identity added (every endpoint)", report.add_identity_all),
        ("one rule added (every endpoint)", report.add_rule_all),
    ]
    lines = [
        f"policy computation: {report.pods} pods on {NODES} nodes, {report.identities} "
        f"identities, {report.rules} rules; loaded in {report.load_s:.1f} s (agent), "
        f"{report.load_all_s:.1f} s (every endpoint computed)",
        f"{'computation':<50}{'runs':>6}{'p50 ms':>10}{'p99 ms':>10}",
    ]
    lines += [f"{name:<50}{t.runs:>6}{t.p50_ms:>10.1f}{t.p99_ms:>10.1f}" for name, t in rows]
    lines.append(
        f"policy map entries per endpoint: p50 {report.entries_p50}, "
        f"mean {report.entries_mean:.0f}, max {report.entries_max}"
    )
    worst = max(t.p50_ms for _, t in rows)
    verdict = "met" if worst < GOAL_MS else "NOT met"
    lines.append(f"goal: every computation under {GOAL_MS:.0f} ms p50: {verdict}")
    return "\n".join(lines)


ENFORCE_GOAL_MS = 500.0
"""The issue's goal from `pylium apply` to every node enforcing."""
ENFORCE_POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "bench-web", "namespace": "default"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "web"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}],
    },
}


@dataclass(frozen=True)
class EnforceReport:
    """Apply-to-enforced in a lab: from launching `pylium apply` of a policy to every node's
    pinned `pylium_policy_ep` holding the ingress flag of its web pod."""

    nodes: int
    apply_to_enforced: Timing
    apply_command: Timing
    """The `pylium apply` process alone (start-up, validation, store write)."""


def _pylium(*args: str, stdin: str | None = None) -> str:
    exe = str(Path(sys.executable).parent / "pylium")
    proc = subprocess.run([exe, *args], input=stdin, capture_output=True, text=True, timeout=120)
    if proc.returncode:
        raise RuntimeError(f"pylium {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def _enforcing(pins: list[Path]) -> bool:
    """Whether every node's endpoint flags map has an ingress-enforced endpoint."""
    for pin in pins:
        raw = RawMap.from_pin(pin)
        try:
            flags = [EndpointFlags.from_buffer_copy(v).flags for _, v in raw.lookup_batch()]
        finally:
            raw.close()
        if not any(f & FLAG_INGRESS for f in flags):
            return False
    return True


def _poll(done: Callable[[], bool], timeout: float = 30, interval: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("policy maps did not change in time")
        time.sleep(interval)


def run_enforce(progress: Callable[[str], None], runs: int = 10, nodes: int = 3) -> EnforceReport:
    """Bring up a lab (one web pod per node), apply and delete the policy `runs` times."""
    lab = unique_name("po")
    progress(f"lab {lab}: {nodes} nodes, a web pod on each ...")
    up(lab, nodes, progress=lambda _line: None)
    try:
        pods = []
        for i in range(1, nodes + 1):
            container = {
                "name": "web",
                "image": "pylium/podserver",
                "ports": [{"containerPort": 80}],
            }
            pods.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"web{i}",
                        "namespace": "default",
                        "labels": {"app": "web"},
                    },
                    "spec": {"nodeName": record.node_name(lab, i), "containers": [container]},
                }
            )
        _pylium("--lab", lab, "apply", "-f", "-", stdin=yaml.safe_dump_all(pods))
        # Each check starts a `pylium get pods` process: every 0.2 s, not every 2 ms.
        _poll(lambda: _pylium("--lab", lab, "get", "pods").count("Running") == nodes, 60, 0.2)
        pins = [BPFFS_ROOT / record.node_name(lab, i) / MAP_POLICY_EP for i in range(1, nodes + 1)]
        policy_yaml = yaml.safe_dump(ENFORCE_POLICY)
        enforced, commands = [], []
        for run in range(runs):
            progress(f"apply-to-enforced run {run + 1}/{runs} ...")
            start = time.perf_counter()
            _pylium("--lab", lab, "apply", "-f", "-", stdin=policy_yaml)
            commands.append(time.perf_counter() - start)
            _poll(lambda: _enforcing(pins))
            enforced.append(time.perf_counter() - start)
            _pylium("--lab", lab, "delete", "networkpolicy", "bench-web", "-n", "default")
            _poll(lambda: not any(_enforcing([p]) for p in pins))
        return EnforceReport(nodes, _timing(enforced), _timing(commands))
    finally:
        down(lab, force=True, progress=lambda _line: None)


def render_enforce(report: EnforceReport) -> str:
    """The lab report as text."""
    e, c = report.apply_to_enforced, report.apply_command
    return (
        f"apply-to-enforced on {report.nodes} nodes ({e.runs} runs): p50 {e.p50_ms:.0f} ms, "
        f"p99 {e.p99_ms:.0f} ms (goal < {ENFORCE_GOAL_MS:.0f} ms); the pylium apply command "
        f"alone p50 {c.p50_ms:.0f} ms"
    )
