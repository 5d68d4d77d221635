"""`pylium bench flows`, tiny: real events through the observer are counted without loss at a
low paced rate, the full-speed run accounts for every event, the overhead figures are real
run times, two pods exchange traffic with export on and off (the observer decoding the
connections' flows), and the scratch pin directories and namespaces go away."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pylium.bench import flows, flows_pods
from pylium.cli.main import cli
from pylium.paths import BPFFS_ROOT, NETNS_DIR

pytestmark = pytest.mark.root


def test_the_flow_bench_counts_every_event(monkeypatch):
    monkeypatch.setattr(flows, "FIRST_RATE", 1000)
    before = set(BPFFS_ROOT.glob("bench-flows-*"))
    netns_before = set(NETNS_DIR.glob(f"{flows_pods.NETNS_PREFIX}*"))
    report = flows.run_bench(
        seconds=0.3, rounds=3, max_rate=2000, progress=lambda _: None, pod_seconds=1
    )
    paced, full = report.runs[0], report.runs[-1]
    assert paced.target == 1000 and paced.produced >= 200
    assert paced.decoded == paced.produced and paced.lost == 0
    assert report.sustained >= 1000
    assert full.target == 0 and full.produced > 0 and full.decoded > 0
    assert full.decoded + full.lost == full.produced
    assert report.ns_events > 0 and report.ns_aggregated > 0 and report.ns_off > 0
    assert report.ns_connection_events > 0 and report.ns_connection_off > 0
    pods = report.pods
    for variant in flows_pods.VARIANTS:
        assert all(pods.rates[variant][test] > 0 for test in flows_pods.TESTS)
        assert all(len(pods.slices[variant][test]) == 1 for test in flows_pods.TESTS)
    # Every connection's SYN is reported (export on), so the observer decoded flows.
    assert pods.flows["conn_per_s"] > 0
    assert set(BPFFS_ROOT.glob("bench-flows-*")) == before
    assert set(NETNS_DIR.glob(f"{flows_pods.NETNS_PREFIX}*")) == netns_before


def test_the_cli_prints_json(monkeypatch):
    monkeypatch.setattr(flows, "FIRST_RATE", 1000)
    monkeypatch.setattr(flows, "run_bench", _tiny(flows.run_bench))
    args = ["bench", "flows", "--seconds", "0.2", "--pod-seconds", "1", "-o", "json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {
        "runs",
        "sustained",
        "nsPerPacketEvents",
        "nsPerPacketAggregated",
        "overhead",
        "requestResponseOverhead",
        "connectionOverhead",
        "pods",
    } <= set(data)
    assert set(data["pods"]["overhead"]) == set(flows_pods.TESTS)


def _tiny(run_bench):
    def tiny(seconds, progress, pod_seconds):
        return run_bench(
            seconds, rounds=2, max_rate=1000, progress=progress, pod_seconds=pod_seconds
        )

    return tiny
