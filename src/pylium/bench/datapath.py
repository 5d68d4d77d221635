"""`pylium bench datapath`: pod to pod on one node, with pylium's programs and without.

Two pod namespaces talk across three topologies:

- **pylium** (A): each pod joined to a node namespace by its own veth pair, plumbed by the
  agent's own code (`PyrouteNetlink.setup_node` + `endpoint.plumbing.plumb`: pylium_host holds
  the router IP, a pod has a /32 and a default route through it), with from-container and
  to-container attached by tcx to both host-side veths and both endpoints in the maps, as the
  agent does: pod to pod goes by `bpf_redirect` and skips the node's stack;
- **bare veth** (B): the same two pods joined directly by one plain veth pair (`bare0`, its
  own addresses), no programs: the floor, one veth crossing;
- **routed** (C): A without the programs: the kernel routes through the node namespace.

Tests, from pod a to pod b: TCP throughput (iperf3, one stream), request/response rate and
connection rate (`traffic.py`). All three topologies exist at once (A and C differ only in
whether the tcx links are attached), so the run is interleaved: every test is cut into
1-second slices and each round runs one slice per topology, in a rotating order. Background
load on the machine then hits every topology alike, and the spread of the slices shows how
steady the machine was. BPF run-time statistics are on during the pylium slices only.

`run_bench` creates the three namespaces and deletes them afterwards; the work runs in
`pylium.bench.datapath_worker`, started inside the node namespace because the agent's netlink
adapter and tcx attach act on the namespace they run in.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pylium import paths
from pylium.bench.scratch import netns_add, netns_del, unique_name

NETNS_PREFIX = "pyl-tbd-"
"""Namespaces of one run: <prefix><random>-{node,a,b}."""

TOPOLOGIES = ("pylium", "bare_veth", "routed")
TESTS = ("throughput_gbps", "rr_per_s", "conn_per_s")
PROGRAMS = ("from_container", "to_container")
SLICE_SECONDS = 1
"""Length of one slice; iperf3 counts whole seconds."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Figures:
    """One topology's results: each figure is the total over its slices."""

    throughput_gbps: float
    """iperf3, one TCP stream, received rate."""
    rr_per_s: float
    """1-byte request / 1-byte response transactions per second on one connection."""
    conn_per_s: float
    """Connect, 1-byte request, 1-byte response, close: connections per second."""
    retransmits: int
    """TCP retransmissions iperf3 saw (non-zero means drops somewhere on the path)."""
    slices: dict[str, list[float]]
    """Test -> the rate of each slice, in run order."""


@dataclass(frozen=True)
class ProgramCost:
    """One program's BPF run-time statistics over the pylium slices of one test."""

    runs: int
    ns_per_run: float


@dataclass(frozen=True)
class Report:
    """Everything one run measured."""

    rounds: int
    figures: dict[str, Figures]
    """Topology -> figures."""
    costs: dict[str, dict[str, ProgramCost]]
    """Program -> test -> cost, in the pylium topology."""
    forwarded: dict[str, int]
    """Packets the programs counted as forwarded (pylium_metrics): "egress", "ingress"."""

    def ratio(self, test: str, baseline: str) -> float:
        """pylium / baseline for one test, from the totals."""
        return ratio(self.figures, test, "pylium", baseline)

    def round_ratio(self, test: str, baseline: str) -> float:
        """pylium / baseline for one test, the median of the per-round ratios."""
        return round_ratio(self.figures, test, "pylium", baseline)


def ratio(figures: dict[str, Figures], test: str, ours: str, baseline: str) -> float:
    """ours / baseline for one test, from the totals."""
    a: float = getattr(figures[ours], test)
    b: float = getattr(figures[baseline], test)
    return a / b


def round_ratio(figures: dict[str, Figures], test: str, ours: str, baseline: str) -> float:
    """The median over rounds of ours / baseline within a round: the two slices of a round ran
    seconds apart, so a burst of load elsewhere that hits one round skews it less than it
    skews the totals."""
    a, b = figures[ours].slices[test], figures[baseline].slices[test]
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def run_bench(duration: int, progress: Progress, netns_prefix: str = NETNS_PREFIX) -> Report:
    """Build the namespaces, run the worker in the node namespace, clean up.

    Args:
        duration: seconds per test and topology (that many interleaved rounds).
        progress: receives one line per step.
        netns_prefix: prefix of the namespace names (a random suffix follows).
    """
    if duration < SLICE_SECONDS:
        raise ValueError(f"duration must be at least {SLICE_SECONDS} s")
    spec = {"rounds": duration // SLICE_SECONDS}
    output = run_in_scratch_pods(f"{__name__}_worker", spec, progress, netns_prefix)
    return report_from_json(json.loads(output))


def run_in_scratch_pods(
    worker: str, spec: dict[str, Any], progress: Progress, netns_prefix: str
) -> str:
    """Make the node, a and b namespaces, run `python -m <worker> SPEC_JSON` inside the node
    namespace (SPEC_JSON is `spec` plus `netns`: role -> path), delete the namespaces after;
    returns the worker's stdout. `pylium bench flows` runs its two-pod worker this way too."""
    base = unique_name(netns_prefix)
    names = {role: f"{base}-{role}" for role in ("node", "a", "b")}
    made: list[str] = []
    try:
        for name in names.values():
            netns_add(name)
            made.append(name)
        full = {**spec, "netns": {role: str(paths.NETNS_DIR / n) for role, n in names.items()}}
        enter = ["nsenter", f"--net={paths.NETNS_DIR / names['node']}", "--"]
        argv = [*enter, sys.executable, "-m", worker, json.dumps(full)]
        return _run_worker(argv, progress)
    finally:
        for name in reversed(made):
            netns_del(name)


def _run_worker(argv: list[str], progress: Progress) -> str:
    """Run the worker, passing its stderr lines to `progress`; returns its stdout."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            for line in proc.stderr:
                progress(line.rstrip("\n"))
            output = proc.stdout.read()
        except BaseException:
            proc.kill()
            raise
        if proc.wait() != 0:
            raise RuntimeError(f"the bench worker {argv[-2]} failed (exit {proc.returncode})")
    return output


LABELS = {
    "throughput_gbps": "TCP throughput (Gbit/s)",
    "rr_per_s": "request/response (/s)",
    "conn_per_s": "connections (/s)",
}


def figures_table(
    figures: dict[str, Figures],
    columns: dict[str, str],
    ratios: dict[str, tuple[str, str]],
    width: int,
) -> list[str]:
    """The side-by-side table both datapath benches print: a column per topology (`columns`:
    topology -> heading, `width` wide), then a 7-wide column per ratio (`ratios`: heading ->
    (ours, baseline)). Per test a row of totals with the ratios of the totals, and a row of
    the slices' min-max with the median per-round ratios; last the TCP retransmits."""

    def cell(test: str, value: float) -> str:
        return f"{value:{width}.2f}" if test == "throughput_gbps" else f"{value:{width}.0f}"

    lines = [
        f"{'':26}"
        + "".join(f"{heading:>{width}}" for heading in columns.values())
        + "".join(f"{heading:>7}" for heading in ratios)
    ]
    for test, label in LABELS.items():
        values = [getattr(figures[t], test) for t in columns]
        totals = "".join(f"{ratio(figures, test, *pair):7.2f}" for pair in ratios.values())
        lines.append(f"{label:26}" + "".join(cell(test, v) for v in values) + totals)
        spread = [
            f"{cell(test, min(s)).strip()}-{cell(test, max(s)).strip()}"
            for s in (figures[t].slices[test] for t in columns)
        ]
        rounds = "".join(f"{round_ratio(figures, test, *pair):7.2f}" for pair in ratios.values())
        lines.append(f"{'  slices min-max':26}" + "".join(f"{s:>{width}}" for s in spread) + rounds)
    retrans = "".join(f"{figures[t].retransmits:{width}d}" for t in columns)
    lines.append(f"{'TCP retransmits':26}{retrans}")
    return lines


def render_text(report: Report) -> str:
    """The side-by-side table with ratios, then each program's cost per run."""
    lines = [
        f"pylium bench datapath: pod to pod on one node, {report.rounds} interleaved rounds of"
        f" {SLICE_SECONDS} s per test and topology",
        *figures_table(
            report.figures,
            {"pylium": "A pylium", "bare_veth": "B bare veth", "routed": "C routed"},
            {"A/B": ("pylium", "bare_veth"), "A/C": ("pylium", "routed")},
            width=14,
        ),
    ]
    lines += [
        "A: from/to-container on tcx, pod to pod by bpf_redirect; B: one plain veth between",
        "the pods; C: A's veths and node namespace, routed by the kernel, no programs.",
        "Ratios: first row from the totals, second row the median of the per-round ratios.",
        "",
        "BPF run-time statistics during A (ns per run; a run is one skb, in the throughput",
        "test a GSO aggregate of up to 64 KiB):",
        f"{'':26}" + "".join(f"{LABELS[t].split(' (')[0]:>22}" for t in TESTS),
    ]
    for prog, by_test in report.costs.items():
        cells = "".join(f"{by_test[t].ns_per_run:7.0f} ns x{by_test[t].runs:<10d}" for t in TESTS)
        lines.append(f"{prog:26}{cells}".rstrip())
    lines.append(
        f"packets forwarded by the programs (pylium_metrics): {report.forwarded['egress']}"
        f" egress, {report.forwarded['ingress']} ingress"
    )
    return "\n".join(lines)


def to_json(report: Report) -> dict[str, Any]:
    """Stable machine-readable output: the report plus ratios and slice medians."""
    out = asdict(report)
    out["ratio"] = {
        f"pylium/{base}": {test: report.ratio(test, base) for test in TESTS}
        for base in ("bare_veth", "routed")
    }
    out["round_ratio"] = {
        f"pylium/{base}": {test: report.round_ratio(test, base) for test in TESTS}
        for base in ("bare_veth", "routed")
    }
    out["slice_median"] = {
        t: {test: statistics.median(f.slices[test]) for test in TESTS}
        for t, f in report.figures.items()
    }
    return out


def report_from_json(data: dict[str, Any]) -> Report:
    """The worker's JSON as a Report."""
    return Report(
        rounds=int(data["rounds"]),
        figures={t: Figures(**data["figures"][t]) for t in TOPOLOGIES},
        costs={
            p: {t: ProgramCost(**c) for t, c in by_test.items()}
            for p, by_test in data["costs"].items()
        },
        forwarded={k: int(v) for k, v in data["forwarded"].items()},
    )
