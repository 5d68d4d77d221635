"""`pylium bench services` for real at 1 and 100 services: every mode measures positive
figures (a connect through a mode whose rules or maps did not translate the ClusterIP would
fail: nothing listens on it), and the run leaves no namespace, cgroup or pin behind."""

from __future__ import annotations

import secrets

import pytest

from pylium import paths
from pylium.bench.services import MODES, render_text, run_bench, to_json

pytestmark = pytest.mark.root


def test_every_mode_measures_every_size_and_cleans_up() -> None:
    run = f"tv-{secrets.token_hex(3)}"
    progress: list[str] = []

    results = run_bench([1, 100], progress.append, run=run)

    assert {(r.mode, r.services) for r in results} == {(m, n) for m in MODES for n in (1, 100)}
    for r in results:
        figures = (r.full_sync_ms, r.connect_p50_ms, r.connect_p99_ms, r.direct_p50_ms)
        figures += (r.add_ms, r.remove_ms)
        assert all(f > 0 for f in figures), r
        assert r.connect_p50_ms <= r.connect_p99_ms
    assert any("100 services: nftables" in line for line in progress)
    text = render_text(results)
    assert "iptables / ebpf" in text and "ebpf p50 from 1 to 100 services" in text
    assert len(to_json(results)["results"]) == 6

    netns = [p.name for p in paths.NETNS_DIR.iterdir()] if paths.NETNS_DIR.exists() else []
    assert not [n for n in netns if n.startswith(f"pyl-{run.replace('-', '')}")]
    assert not (paths.CGROUP_ROOT / run).exists()
    assert not (paths.BPFFS_ROOT / run).exists()
