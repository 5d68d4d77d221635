"""`pylium bench datapath --cross-node` with one round: every topology has figures, the programs
of both labs carried the traffic, tunnel pods have the VXLAN-reduced MTU, and nothing of the
run's labs or namespaces remains."""

from __future__ import annotations

import json
import os
import re

import pytest

from pylium import paths
from pylium.bench.datapath import TESTS
from pylium.bench.datapath_xnode import LAB_ROUTING, MTU, TOPOLOGIES
from pylium.lab import netns
from tests.lab.conftest import leftovers, pylium

pytestmark = pytest.mark.root


def test_cross_node_bench_measures_every_topology_and_cleans_up() -> None:
    if os.geteuid() != 0:
        pytest.skip("the bench needs root")
    proc = pylium("bench", "datapath", "--cross-node", "--duration", "1", "-o", "json")
    labs = re.findall(r"^lab (\S+): 2 nodes", proc.stderr, re.MULTILINE)
    (routed,) = re.findall(
        rf"^routed: namespaces ({paths.LAB_NETNS_PREFIX}\S+)-\*", proc.stderr, re.M
    )
    assert len(labs) == len(LAB_ROUTING)
    for lab in labs:
        assert leftovers(lab) == {}
    assert netns.matching(re.compile(re.escape(routed) + "-.*")) == []

    report = json.loads(proc.stdout)
    assert report["rounds"] == 1
    for topology in TOPOLOGIES:
        figures = report["figures"][topology]
        assert all(figures[test] > 0 for test in TESTS), (topology, figures)
        assert all(len(figures["slices"][test]) == 1 for test in TESTS)
    for topology in LAB_ROUTING:
        assert set(report["ratio"][f"{topology}/routed"]) == set(TESTS)
        # A 1-second iperf3 slice alone moves far more packets than this.
        assert report["forwarded"][topology] > 10_000, report["forwarded"]
    assert report["pod_mtu"] == {"native": MTU, "tunnel": MTU - 50, "routed": MTU}
