"""Lab lifecycle beyond the shared lab: down --force after a lost record, and the demo."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pylium.lab import record
from tests.lab.conftest import leftovers, pylium, unique_lab

pytestmark = pytest.mark.root


@pytest.fixture
def lab_name() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    name = unique_lab()
    yield name
    pylium("lab", "down", "--name", name, "--force", check=False)
    assert leftovers(name) == {}


def test_down_force_cleans_up_after_the_record_is_lost(lab_name: str) -> None:
    pylium("lab", "up", "--name", lab_name)
    assert leftovers(lab_name)["processes"]
    record.record_path(lab_name).unlink()
    for verb in ("down", "up"):
        refused = pylium("lab", verb, "--name", lab_name, check=False)
        assert refused.returncode != 0 and "--force" in refused.stderr, verb
    pylium("lab", "down", "--name", lab_name, "--force")
    assert leftovers(lab_name) == {}
    again = pylium("lab", "down", "--name", lab_name)
    assert "nothing to remove" in again.stdout


def test_demo_runs_end_to_end_and_replaces_its_lab(lab_name: str) -> None:
    first = pylium("lab", "demo", "--name", lab_name)
    assert first.stdout.count("answered") == 3
    second = pylium("lab", "demo", "--name", lab_name)  # replaces the lab it made
    assert "answered web-1" in second.stdout and "answered web-2" in second.stdout
    assert f"pylium lab down --name {lab_name}" in second.stdout


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--nodes", "0"], "--nodes 0"),
        (["--store", "etcd://10.1.2.3:2379"], "loopback"),
    ],
)
def test_unsupported_requests_are_refused_cleanly(
    lab_name: str, args: list[str], error: str
) -> None:
    proc = pylium("lab", "up", "--name", lab_name, *args, check=False)
    assert proc.returncode != 0 and error in proc.stderr
    assert leftovers(lab_name) == {}
