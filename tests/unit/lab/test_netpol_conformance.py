"""The pure parts of the NetworkPolicy conformance harness: the case file's placeholders, the
probe matrix of a step and the namespaces the cases create (the lab part runs in
tests/lab/test_policy_conformance.py)."""

from __future__ import annotations

import pytest

from pylium.lab.conformance.cases import load_cases, substitute
from pylium.lab.conformance.netpol import Cell, created_namespaces, matrix


def test_that_placeholders_become_the_pods_host_and_wide_networks():
    ips = {"x/a": "10.244.1.7"}
    peer = {"ipBlock": {"cidr": "{{wideCIDR:x/a}}", "except": ["{{hostCIDR:x/a}}"]}}
    assert substitute([peer], ips) == [
        {"ipBlock": {"cidr": "0.0.0.0/4", "except": ["10.244.1.7/32"]}}
    ]


def test_that_a_step_probes_every_pair_but_loopback_on_the_protocols_that_run():
    expected = {"x/a": ["x/b"], "x/b": [], "x/c": ["x/a", "x/b"]}
    probes = [
        {"port": 80, "protocol": "TCP", "expected": expected},
        {"port": 80, "protocol": "SCTP", "expected": expected},
    ]
    cells = matrix(probes, ["TCP", "UDP"])
    assert len(cells) == 6
    assert Cell("x/a", "x/b", 80, "TCP", True) in cells
    assert Cell("x/a", "x/c", 80, "TCP", False) in cells
    assert Cell("x/b", "x/a", 80, "TCP", False) in cells
    assert all(c.src != c.dst and c.protocol == "TCP" for c in cells)


def test_that_the_namespaces_the_cases_create_are_known_before_the_run():
    data = load_cases()
    if data is None:
        pytest.skip("no shared/conformance/netpol/cases.yaml beside this checkout")
    assert created_namespaces(data["cases"]) == {"y-2", "w"}
