"""The shared NetworkPolicy truth-table cases (`shared/conformance/netpol/cases.yaml`) through
the datapath of 3-node labs, with `pylium conformance netpol` as a user runs it: every case
once, spread over tunnel and native routing and over probes through pod IPs and through the
pods' ClusterIPs. Each run prints its PASS/FAIL table into the test output; a failure names the
wrong cells (datapath or trace)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from pylium.lab.conformance.cases import load_cases
from tests.lab.conftest import PYLIUM, leftovers, pylium, unique_lab

pytestmark = pytest.mark.root

DATA = load_cases()
IDS = [c["id"] for c in DATA["cases"]] if DATA else []
RUNS = {
    ("tunnel", "pod"): IDS[0::3],
    ("tunnel", "service"): IDS[1::3],
    ("native", "pod"): IDS[2::6],
    ("native", "service"): IDS[5::6],
}
"""Every case once within the time budget (a full run of one lab and path takes ~3 min):
two thirds in tunnel mode, a third in native mode, each half through pod IPs, half through
ClusterIPs."""


@pytest.fixture(scope="module", params=["tunnel", "native"])
def lab(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """A 3-node lab in the routing mode, removed at the end; nothing of it may remain:
    (name, routing)."""
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    if DATA is None:
        pytest.skip("no shared/conformance/netpol/cases.yaml beside this checkout")
    name = unique_lab()
    try:
        pylium("lab", "up", "--name", name, "--nodes", "3", "--routing", request.param)
        yield name, request.param
    finally:
        pylium("lab", "down", "--name", name, "--force", check=False)
        assert leftovers(name) == {}


@pytest.mark.parametrize("via", ["pod", "service"])
def test_that_the_datapath_and_trace_match_every_truth_table(
    lab: tuple[str, str], via: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name, routing = lab
    ids = RUNS[(routing, via)]
    argv = [PYLIUM, "--lab", name, "conformance", "netpol", "--via", via]
    for case_id in ids:
        argv += ["--case", case_id]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    with capsys.disabled():
        print(f"\n{routing}, via {via}:\n{proc.stdout}{proc.stderr}")
    assert proc.stdout.count("\nPASS ") == len(ids), proc.stdout
    assert proc.returncode == 0, proc.stderr
