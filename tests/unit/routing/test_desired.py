"""Desired node routes: every other node's pod CIDRs via its InternalIP, nothing else."""

from __future__ import annotations

from typing import Any

from pylium.routing import NodeRoute, desired_routes


def cilium_node(name: str, cidrs: list[str], ip: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"ipam": {"podCIDRs": cidrs}}
    if ip:
        spec["addresses"] = [{"type": "InternalIP", "ip": ip}]
    return {"metadata": {"name": name}, "spec": spec}


def node(name: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {
            "addresses": [
                {"type": "Hostname", "address": name},
                {"type": "InternalIP", "address": ip},
            ]
        },
    }


def test_routes_to_every_other_node_and_not_to_itself() -> None:
    cns = [
        cilium_node("n1", ["10.244.0.0/24"], "192.168.64.2"),
        cilium_node("n2", ["10.244.1.0/24", "fd00::/64"], "192.168.64.3"),
        cilium_node("n3", ["10.244.2.0/24"], "192.168.64.4"),
    ]
    assert desired_routes("n1", cns, []) == {
        NodeRoute("10.244.1.0/24", "192.168.64.3"),
        NodeRoute("10.244.2.0/24", "192.168.64.4"),
    }


def test_the_node_object_supplies_a_missing_address() -> None:
    cns = [cilium_node("n1", ["10.244.0.0/24"]), cilium_node("n2", ["10.244.1.0/24"])]
    assert desired_routes("n2", cns, [node("n1", "192.168.64.2")]) == {
        NodeRoute("10.244.0.0/24", "192.168.64.2")
    }


def test_nodes_without_address_or_cidr_contribute_nothing() -> None:
    cns = [
        cilium_node("n1", ["10.244.0.0/24"], "192.168.64.2"),
        cilium_node("n2", [], "192.168.64.3"),
        cilium_node("n3", ["10.244.2.0/24"]),
    ]
    assert desired_routes("n1", cns, [node("n3", "not-an-ip")]) == set()


def test_cidrs_are_normalised() -> None:
    cns = [cilium_node("n2", ["10.244.1.0/24"], "192.168.64.3")]
    (route,) = desired_routes("n1", cns, [])
    assert route.dst == "10.244.1.0/24"
