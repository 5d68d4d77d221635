"""The arithmetic and output of `pylium bench cni` (the measuring itself runs in conformance)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pylium.bench.cni import Summary, percentile, render_text, summarize, to_json
from pylium.cli.main import cli


def test_percentile_nearest_rank():
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([7.0], 99) == 7.0


def test_summarize_in_milliseconds_and_pods_per_second():
    s = summarize([0.010, 0.020, 0.030, 0.040], [0.005] * 4)
    assert s == Summary(
        add_p50_ms=pytest.approx(20.0),
        add_p99_ms=pytest.approx(40.0),
        del_p50_ms=pytest.approx(5.0),
        del_p99_ms=pytest.approx(5.0),
        pods_per_s=pytest.approx(4 / 0.1),
    )


SUMMARIES = {
    "pylium": Summary(20.0, 40.0, 10.0, 20.0, 50.0),
    "reference": Summary(10.0, 20.0, 20.0, 40.0, 100.0),
}


def test_text_side_by_side_with_ratio():
    lines = render_text(10, SUMMARIES).splitlines()
    assert lines[1].split() == ["pylium-cni", "bridge+host-local", "ratio"]
    assert lines[2].split() == ["ADD", "p50", "(ms)", "20.0", "10.0", "2.00"]
    assert lines[4].split() == ["DEL", "p50", "(ms)", "10.0", "20.0", "0.50"]
    assert lines[6].split() == ["pods/s", "(ADD)", "50.0", "100.0", "0.50"]


def test_json_output():
    out = json.loads(json.dumps(to_json(10, SUMMARIES)))
    assert out["count"] == 10
    assert out["pylium"]["add_p50_ms"] == 20.0
    assert out["ratio"]["add_p99_ms"] == 2.0
    assert out["ratio"]["pods_per_s"] == 0.5


def test_cli_rejects_bad_count():
    result = CliRunner().invoke(cli, ["bench", "cni", "--count", "0"])
    assert result.exit_code == 2
    assert "--count" in result.output
