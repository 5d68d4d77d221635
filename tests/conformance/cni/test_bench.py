"""`pylium bench cni` end to end with a few pods: both contenders measured, nothing left over."""

from __future__ import annotations

import os
import subprocess

import pytest

from pylium.bench.cni import NETNS_PREFIX, run_bench

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]


def bench_netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.startswith(NETNS_PREFIX)}


def test_bench_cni_small_run():
    before = bench_netns()
    lines: list[str] = []
    summaries = run_bench(3, lines.append)
    for name in ("pylium", "reference"):
        s = summaries[name]
        assert 0 < s.add_p50_ms <= s.add_p99_ms
        assert 0 < s.del_p50_ms <= s.del_p99_ms
        assert s.pods_per_s > 0
    assert "ADD 3/3 per plugin" in lines and "DEL 3/3 per plugin" in lines
    assert bench_netns() == before
