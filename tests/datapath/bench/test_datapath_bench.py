"""`pylium bench datapath` for real, one round: every figure is there and positive, the pylium
topology's traffic went through the programs, and the run leaves no namespace behind."""

from __future__ import annotations

import json
import math
import secrets

import pytest

from pylium import paths
from pylium.bench.datapath import (
    PROGRAMS,
    TESTS,
    TOPOLOGIES,
    render_text,
    report_from_json,
    run_bench,
    to_json,
)

pytestmark = pytest.mark.root


def test_that_one_round_measures_every_topology_and_the_programs_carry_topology_a():
    prefix = f"pyl-tbd-{secrets.token_hex(2)}"
    progress: list[str] = []

    report = run_bench(1, progress.append, netns_prefix=prefix)

    for topology in TOPOLOGIES:
        figures = report.figures[topology]
        for test in TESTS:
            value = getattr(figures, test)
            assert math.isfinite(value) and value > 0, (topology, test, value)
            assert len(figures.slices[test]) == 1 and figures.slices[test][0] > 0
    # Traffic in A went through both programs in every test, and they forwarded it.
    for program in PROGRAMS:
        for test in TESTS:
            cost = report.costs[program][test]
            assert cost.runs > 0 and cost.ns_per_run > 0, (program, test, cost)
    assert report.forwarded["egress"] > 0 and report.forwarded["ingress"] > 0
    assert report.forwarded["egress"] >= report.costs["from_container"]["conn_per_s"].runs
    for test in TESTS:
        for base in ("bare_veth", "routed"):
            assert report.ratio(test, base) > 0
            # One round: the median of one per-round ratio is the ratio of the totals.
            assert report.round_ratio(test, base) == pytest.approx(report.ratio(test, base))

    assert report_from_json(json.loads(json.dumps(to_json(report)))) == report
    text = render_text(report)
    assert "TCP throughput (Gbit/s)" in text and "from_container" in text
    assert [line for line in progress if line.startswith("conn_per_s")] == ["conn_per_s: round 1/1"]
    assert not [ns for ns in paths.NETNS_DIR.iterdir() if ns.name.startswith(prefix)]
