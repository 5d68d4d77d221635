"""A real Prometheus server (Debian's `prometheus`) scrapes the agent's metrics endpoint and
answers queries for Hubble's flow counters."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from pylium.metrics.server import MetricsParams, MetricsServer
from tests.support import eventually
from tests.unit.metrics.test_metrics import fed_registry

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian prometheus")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prometheus(tmp_path: Path):
    """Start Prometheus scraping `target` each second; yields (start(target), query)."""
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> None:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: pylium\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        with (tmp_path / "prometheus.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        "prometheus",
                        f"--config.file={config}",
                        f"--storage.tsdb.path={tmp_path / 'data'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    def query(expr: str) -> list[dict]:
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return list(json.load(resp)["data"]["result"])
        except OSError:
            return []  # not up yet

    try:
        yield start, query
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def test_that_prometheus_scrapes_the_flow_counters(prometheus):
    start, query = prometheus
    registry, _, _ = fed_registry()
    server = MetricsServer(MetricsParams("127.0.0.1:0"), registry)
    await server.start()
    try:
        start(f"127.0.0.1:{server.port}")

        async def dropped():
            return query('hubble_flows_processed_total{verdict="DROPPED"}')

        (result,) = await eventually(dropped, timeout=30, interval=0.2)
        assert result["metric"]["job"] == "pylium"
        assert float(result["value"][1]) == 1

        async def up():
            return query("sum(hubble_flows_processed_total)")

        (total,) = await eventually(up, timeout=10, interval=0.2)
        assert float(total["value"][1]) == 3
        (lost,) = query('hubble_lost_events_total{source="OBSERVER_EVENTS_QUEUE"}')
        assert float(lost["value"][1]) == 4
    finally:
        await server.stop()
