"""The two-pod part of `pylium bench flows`: what flow export costs real pod-to-pod traffic.

The topology is `pylium bench datapath`'s "A pylium" (two pod namespaces plumbed by the agent's
code, from-container and to-container on tcx, pod to pod by `bpf_redirect`), with the programs
loaded twice: **export on** as the agent loads them with Hubble on (`trace_events` 1, default
aggregation, the `pylium_events` ring buffer consumed by the agent's `Observer`, which decodes
and enriches every event on its asyncio loop in the worker process) and **export off**
(`trace_events` 0, as with `--enable-hubble false`). Each round runs one 1-second slice per
variant, in a rotating order, attaching that variant's programs for the slice, so background
load hits both alike. Tests: request/response and connection rate (`traffic.py`).

Overhead is the extra time per transaction or connection with export on: off rate / on rate
- 1, from the totals and as the median of the per-round values.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from typing import Any

from pylium.bench.datapath import SLICE_SECONDS, Progress, run_in_scratch_pods

NETNS_PREFIX = "pyl-tbf-"
"""Namespaces of one run: <prefix><random>-{node,a,b}."""
VARIANTS = ("export_on", "export_off")
TESTS = ("rr_per_s", "conn_per_s")
LABELS = {"rr_per_s": "request/response (/s)", "conn_per_s": "connections (/s)"}


@dataclass(frozen=True)
class PodReport:
    """Everything one two-pod run measured."""

    rounds: int
    rates: dict[str, dict[str, float]]
    """Variant -> test -> the rate over all its slices."""
    slices: dict[str, dict[str, list[float]]]
    """Variant -> test -> each slice's rate, in round order."""
    flows: dict[str, int]
    """Test -> flows the observer decoded while it ran (export on slices)."""
    lost: dict[str, int]
    """Test -> events lost meanwhile (ring buffer full, or undecodable)."""

    def overhead(self, test: str) -> float:
        """Extra time per transaction with export on, from the totals."""
        return self.rates["export_off"][test] / self.rates["export_on"][test] - 1

    def round_overhead(self, test: str) -> float:
        """The median over rounds of the same within a round (less skewed by a burst of
        load that hits one round)."""
        on, off = self.slices["export_on"][test], self.slices["export_off"][test]
        return statistics.median(b / a - 1 for a, b in zip(on, off, strict=True))


def run_bench(seconds: int, progress: Progress, netns_prefix: str = NETNS_PREFIX) -> PodReport:
    """`seconds` interleaved rounds per test (each a slice per variant) in scratch namespaces,
    removed afterwards."""
    if seconds < SLICE_SECONDS:
        raise ValueError(f"seconds must be at least {SLICE_SECONDS}")
    spec = {"rounds": seconds // SLICE_SECONDS}
    output = run_in_scratch_pods(f"{__name__}_worker", spec, progress, netns_prefix)
    return PodReport(**json.loads(output))


def render_text(report: PodReport, goal: float) -> str:
    """Export on against off per test, with the slices' spread and the overhead."""
    lines = [
        f"two pods (bench datapath's A), {report.rounds} interleaved rounds of {SLICE_SECONDS} s"
        " per test: flow export on (the observer decoding) against off",
        f"{'':24}{'export on':>12}{'export off':>12}{'overhead':>10}{'per round':>11}",
    ]
    for test, label in LABELS.items():
        on, off = report.rates["export_on"][test], report.rates["export_off"][test]
        lines.append(
            f"{label:24}{on:12.0f}{off:12.0f}{report.overhead(test):+10.1%}"
            f"{report.round_overhead(test):+11.1%}"
        )
        spread = [f"{min(s[test]):.0f}-{max(s[test]):.0f}" for s in report.slices.values()]
        lines.append(f"{'  slices min-max':24}" + "".join(f"{s:>12}" for s in spread))
    verdict = "meets" if report.overhead("rr_per_s") < goal else "misses"
    lines.append(
        f"request/response overhead {report.overhead('rr_per_s'):+.1%} ({verdict} the"
        f" <{goal:.0%} goal, from the totals)"
    )
    for test in TESTS:
        lines.append(
            f"  {LABELS[test].split(' (')[0]}: {report.flows[test]} flows decoded with export on,"
            f" {report.lost[test]} events lost"
        )
    return "\n".join(lines)


def to_json(report: PodReport) -> dict[str, Any]:
    """The report plus overheads."""
    return asdict(report) | {
        "overhead": {t: report.overhead(t) for t in TESTS},
        "roundOverhead": {t: report.round_overhead(t) for t in TESTS},
    }
