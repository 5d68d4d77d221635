"""`pylium bench datapath --cross-node`: pod to pod across two nodes, with pylium and without.

A pod on node 1 talks to a pod on node 2 across three topologies, all up at once:

- **native** (A): a real 2-node lab in native routing (`pylium.lab.up`: agents with their
  programs on the pods' veths and the uplinks, routes to the other node's pod CIDR through the
  underlay);
- **tunnel** (A): the same in tunnel routing (the programs encapsulate in VXLAN, VNI = source
  identity; pods get the uplink MTU less 50 bytes);
- **routed** (C): the lab's shape without pylium: an underlay namespace with a bridge, two node
  namespaces on it, a pod on each by a veth pair, plain kernel routing (a /32 route per pod, a
  route to the other node's pod CIDR via its underlay address), no programs.

Tests, from the pod on node 1 to the pod on node 2: TCP throughput (iperf3, one stream),
request/response rate and connection rate (`traffic.py`), run as `pylium bench datapath` does:
cut into 1-second slices, each round one slice per topology in rotating order, so load
elsewhere on the machine hits every topology alike. The programs' forwarded-packet counters of
each lab (agent `/v1/datapath/metrics`) before and after show they carried the traffic.

The labs are named `<prefix><random>{n,t}` and the routed namespaces `pyl-<prefix><random>r-*`;
all are removed afterwards, also on failure.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from pylium import paths
from pylium.agent.client import AgentClient
from pylium.bench.datapath import (
    SLICE_SECONDS,
    TESTS,
    Figures,
    figures_table,
    ratio,
    round_ratio,
)
from pylium.bench.datapath_worker import Sample, run_test, servers
from pylium.bench.scratch import netns_add, netns_del, unique_name
from pylium.datapath.events import DropReason
from pylium.lab import record
from pylium.lab.down import down
from pylium.lab.record import Routing
from pylium.lab.up import up
from pylium.store import NotFound, open_store

LAB_PREFIX = "tx"
TOPOLOGIES = ("native", "tunnel", "routed")
LAB_ROUTING: dict[str, Routing] = {"native": "native", "tunnel": "tunnel"}
"""Topology -> the routing mode of its lab."""
MTU = 1500
"""Underlay MTU of every topology (tunnel pods get 50 bytes less)."""
POD_NAMESPACE = "default"
POD_READY_TIMEOUT = 60.0

# The routed topology's addresses: its own namespaces, so they may repeat the labs'.
ROUTED_NODE_IPS = ("192.168.64.2", "192.168.64.3")
ROUTED_CIDRS = ("10.244.1.0/24", "10.244.2.0/24")
ROUTED_POD_IPS = ("10.244.1.10", "10.244.2.10")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Report:
    """Everything one run measured."""

    rounds: int
    figures: dict[str, Figures]
    """Topology -> figures."""
    forwarded: dict[str, int]
    """Lab topology -> packets its programs counted as forwarded during the run (all nodes)."""
    pod_mtu: dict[str, int]
    """Topology -> the pods' MTU."""

    def ratio(self, test: str, ours: str, baseline: str = "routed") -> float:
        """ours / baseline for one test, from the totals."""
        return ratio(self.figures, test, ours, baseline)

    def round_ratio(self, test: str, ours: str, baseline: str = "routed") -> float:
        """ours / baseline for one test, the median of the per-round ratios."""
        return round_ratio(self.figures, test, ours, baseline)


@dataclass(frozen=True)
class PodPair:
    """One topology's client and server pods: namespace paths and the server's address."""

    client: str
    server: str
    server_ip: str
    mtu: int


def run_bench(duration: int, progress: Progress, lab_prefix: str = LAB_PREFIX) -> Report:
    """Build the three topologies, run the interleaved slices, remove everything.

    Args:
        duration: seconds per test and topology (that many interleaved rounds).
        progress: receives one line per step.
        lab_prefix: prefix of the lab names (a random suffix follows).
    """
    if duration < SLICE_SECONDS:
        raise ValueError(f"duration must be at least {SLICE_SECONDS} s")
    base = unique_name(lab_prefix)
    with ExitStack() as stack:
        pairs: dict[str, PodPair] = {}
        for topology, routing in LAB_ROUTING.items():
            lab = f"{base}{topology[0]}"
            pairs[topology] = stack.enter_context(_lab_pods(lab, routing, progress))
        pairs["routed"] = stack.enter_context(_routed(f"{base}r", progress))
        labs = {t: f"{base}{t[0]}" for t in LAB_ROUTING}
        before = {t: _forwarded(lab) for t, lab in labs.items()}
        for p in pairs.values():
            stack.enter_context(servers(p.server))
        samples: dict[str, dict[str, list[Sample]]] = {
            t: {test: [] for test in TESTS} for t in TOPOLOGIES
        }
        rounds = duration // SLICE_SECONDS
        for test in TESTS:
            for r in range(rounds):
                progress(f"{test}: round {r + 1}/{rounds}")
                k = r % len(TOPOLOGIES)
                for topology in TOPOLOGIES[k:] + TOPOLOGIES[:k]:
                    p = pairs[topology]
                    samples[topology][test].append(run_test(test, p.client, p.server_ip))
        forwarded = {t: _forwarded(lab) - before[t] for t, lab in labs.items()}
        progress("removing the labs and namespaces")
    return Report(
        rounds=rounds,
        figures={t: _figures(by_test) for t, by_test in samples.items()},
        forwarded=forwarded,
        pod_mtu={t: p.mtu for t, p in pairs.items()},
    )


def _figures(by_test: dict[str, list[Sample]]) -> Figures:
    totals = {
        test: sum(s.amount for s in samples) / sum(s.seconds for s in samples)
        for test, samples in by_test.items()
    }
    return Figures(
        throughput_gbps=totals["throughput_gbps"],
        rr_per_s=totals["rr_per_s"],
        conn_per_s=totals["conn_per_s"],
        retransmits=sum(s.retransmits for s in by_test["throughput_gbps"]),
        slices={test: [s.rate for s in samples] for test, samples in by_test.items()},
    )


def _forwarded(lab: str) -> int:
    """Packets the programs of every node of `lab` counted as forwarded, both directions."""
    rec = record.load(lab)
    assert rec is not None, lab
    return sum(
        m["packets"]
        for node in rec.nodes
        for m in AgentClient(node.agentSocket).datapath_metrics()
        if m["reason"] == DropReason.FORWARDED
    )


@contextmanager
def _lab_pods(lab: str, routing: Routing, progress: Progress) -> Iterator[PodPair]:
    """A 2-node lab with a pod pinned to each node; the lab is removed afterwards."""
    progress(f"lab {lab}: 2 nodes, {routing} routing")
    try:
        rec = up(lab, 2, MTU, progress=lambda line: None, routing=routing)
        pods = {"client": rec.nodes[0].name, "server": rec.nodes[1].name}
        ips = asyncio.run(_start_pods(rec.store, pods))
        ns = {p: str(paths.NETNS_DIR / record.pod_netns(lab, POD_NAMESPACE, p)) for p in pods}
        yield PodPair(ns["client"], ns["server"], ips["server"], _mtu(ns["client"]))
    finally:
        down(lab, force=True, progress=lambda line: None)


async def _start_pods(store_url: str, pods: dict[str, str]) -> dict[str, str]:
    """Create the pods (name -> node) and wait until they run; returns name -> pod IP."""
    store = open_store(store_url)
    try:
        for name, node in pods.items():
            await store.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name, "namespace": POD_NAMESPACE},
                    "spec": {
                        "nodeName": node,
                        "containers": [{"name": "server", "image": "pylium/podserver"}],
                    },
                }
            )
        deadline = time.monotonic() + POD_READY_TIMEOUT
        ips: dict[str, str] = {}
        while len(ips) < len(pods):
            if time.monotonic() > deadline:
                raise RuntimeError(f"pods did not run within {POD_READY_TIMEOUT:.0f} s: {pods}")
            for name in pods:
                try:
                    status = (await store.get("Pod", POD_NAMESPACE, name)).get("status") or {}
                except NotFound:
                    continue
                if status.get("phase") == "Running" and status.get("podIP"):
                    ips[name] = str(status["podIP"])
            await asyncio.sleep(0.1)
        return ips
    finally:
        await store.close()


def _mtu(netns: str, ifname: str = "eth0") -> int:
    out = subprocess.run(
        ["nsenter", f"--net={netns}", "--", "ip", "-j", "link", "show", ifname],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(json.loads(out)[0]["mtu"])


def _ip(netns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", netns, *args], check=True, capture_output=True)


@contextmanager
def _routed(base: str, progress: Progress) -> Iterator[PodPair]:
    """The routed topology: the lab's wiring with plain kernel routing and no programs."""
    progress(f"routed: namespaces {paths.LAB_NETNS_PREFIX}{base}-*, kernel routing only")
    names = {
        role: f"{paths.LAB_NETNS_PREFIX}{base}-{role}"
        for role in ("underlay", "node1", "node2", "pod1", "pod2")
    }
    made: list[str] = []
    try:
        for name in names.values():
            netns_add(name)
            made.append(name)
        under = names["underlay"]
        _ip(under, "link", "add", "br0", "type", "bridge")
        _ip(under, "link", "set", "br0", "up")
        for i in (1, 2):
            node, pod = names[f"node{i}"], names[f"pod{i}"]
            cidr, pod_ip = ROUTED_CIDRS[i - 1], ROUTED_POD_IPS[i - 1]
            gateway = cidr.replace(".0/24", ".1")
            other = 2 - i
            # The uplink: eth0 in the node, its peer on the underlay bridge.
            _ip(node, "link", "add", "eth0", "mtu", str(MTU), "type", "veth", "peer", "name",
                f"n{i}", "netns", under)  # fmt: skip
            _ip(under, "link", "set", f"n{i}", "master", "br0", "up")
            _ip(node, "addr", "add", f"{ROUTED_NODE_IPS[i - 1]}/24", "dev", "eth0")
            _ip(node, "link", "set", "eth0", "up")
            # The pod: eth0 with a /32, the gateway on the node's side of its veth.
            _ip(node, "link", "add", "lxc", "mtu", str(MTU), "type", "veth", "peer", "name",
                "eth0", "netns", pod)  # fmt: skip
            _ip(node, "addr", "add", f"{gateway}/32", "dev", "lxc")
            _ip(node, "link", "set", "lxc", "up")
            _ip(node, "route", "add", f"{pod_ip}/32", "dev", "lxc")
            _ip(node, "route", "add", ROUTED_CIDRS[other], "via", ROUTED_NODE_IPS[other])
            subprocess.run(
                ["ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                check=True,
            )
            _ip(pod, "addr", "add", f"{pod_ip}/32", "dev", "eth0")
            _ip(pod, "link", "set", "eth0", "up")
            _ip(pod, "route", "add", gateway, "dev", "eth0", "scope", "link")
            _ip(pod, "route", "add", "default", "via", gateway)
        pod1, pod2 = (str(paths.NETNS_DIR / names[p]) for p in ("pod1", "pod2"))
        yield PodPair(pod1, pod2, ROUTED_POD_IPS[1], MTU)
    finally:
        for name in reversed(made):
            netns_del(name)


def render_text(report: Report) -> str:
    """The side-by-side table with ratios against the routed path."""
    width = 12
    lines = [
        f"pylium bench datapath --cross-node: pod to pod across two nodes, {report.rounds}"
        f" interleaved rounds of {SLICE_SECONDS} s per test and topology",
        *figures_table(
            report.figures,
            {"native": "A native", "tunnel": "A tunnel", "routed": "C routed"},
            {"nat/C": ("native", "routed"), "tun/C": ("tunnel", "routed")},
            width,
        ),
    ]
    mtus = "".join(f"{report.pod_mtu[t]:{width}d}" for t in TOPOLOGIES)
    lines += [
        f"{'pod MTU':26}{mtus}",
        "A native: a 2-node pylium lab, native routing; A tunnel: the same in VXLAN tunnel",
        "routing; C: the lab's wiring (underlay bridge, node and pod veths) with kernel routes",
        "and no programs. Ratios: first row from the totals, second the median per round.",
        "packets forwarded by the programs (pylium_metrics, all nodes): "
        + ", ".join(f"{t} {n}" for t, n in report.forwarded.items()),
    ]
    return "\n".join(lines)


def to_json(report: Report) -> dict[str, Any]:
    """Stable machine-readable output: the report plus ratios and slice medians."""
    out = asdict(report)
    out["ratio"] = {
        f"{t}/routed": {test: report.ratio(test, t) for test in TESTS} for t in LAB_ROUTING
    }
    out["round_ratio"] = {
        f"{t}/routed": {test: report.round_ratio(test, t) for test in TESTS} for t in LAB_ROUTING
    }
    out["slice_median"] = {
        t: {test: statistics.median(f.slices[test]) for test in TESTS}
        for t, f in report.figures.items()
    }
    return out
