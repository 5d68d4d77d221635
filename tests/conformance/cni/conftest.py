"""Fixtures of the CNI conformance suite: one real agent per module, pods per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from .harness import CniHarness, cni_harness


@pytest.fixture(scope="module")
def node_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CniHarness]:
    if os.geteuid() != 0:
        pytest.skip("CNI conformance needs root (network namespaces)")
    workdir = tmp_path_factory.mktemp("cni-node")
    with cni_harness(workdir) as harness:
        yield harness
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def cni(node_harness: CniHarness) -> Iterator[CniHarness]:
    """The module's harness; pods made by a test are removed after it."""
    yield node_harness
    node_harness.close()
