"""The Grafana dashboard queries metrics pylium exports, in PromQL promtool accepts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pylium.hubble.flow import DropReason, Verdict
from tests.unit.hubble.flows import make_flow
from tests.unit.metrics.test_metrics import fed_registry

DASHBOARD = Path(__file__).parents[3] / "charts" / "grafana" / "pylium.json"


def exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p["targets"]]


def test_that_every_queried_metric_is_exported():
    registry, observer, agent = fed_registry()
    # series that exist once something happened: a policy drop, an API call
    denied = make_flow(verdict=Verdict.DROPPED)
    observer.ring.append(replace(denied, drop_reason_desc=DropReason.POLICY_DENIED))
    agent.api_time.labels("GET", "/healthz", "200").observe(0.001)
    exported = {
        s.name
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    queried = {name for e in exprs() for name in re.findall(r"\b(?:hubble|pylium)_\w+", e)}
    assert queried, "the dashboard queries nothing"
    assert queried <= exported, queried - exported


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus)")
def test_that_promtool_parses_every_query(tmp_path):
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs())],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
