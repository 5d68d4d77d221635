"""Lab names: each lab finds exactly its own namespaces and nodes, never another lab's."""

from __future__ import annotations

from pylium.lab import record
from pylium.lab.daemons import is_agent_of, is_kubelet_of


def test_netns_pattern_matches_only_its_lab() -> None:
    pattern = record.netns_pattern("t1")
    assert pattern.fullmatch(record.node_netns("t1", 1))
    assert pattern.fullmatch(record.pod_netns("t1", "default", "web"))
    for other in ("pyl-t1-node1x", "pyl-t1-x-node1", "pyl-t10-node1", "pyl-t1-p-zz", "lab"):
        assert not pattern.fullmatch(other), other


def test_pod_netns_is_stable_and_distinct() -> None:
    a = record.pod_netns("lab", "default", "web")
    assert a == record.pod_netns("lab", "default", "web")
    assert a != record.pod_netns("lab", "other", "web")


def test_record_round_trips_through_json() -> None:
    lab = record.LabRecord.new("t1", 1)
    (node,) = lab.nodes
    assert (node.name, node.netns, node.podCIDR) == ("t1-node1", "pyl-t1-node1", "10.244.1.0/24")
    assert lab.store == "sqlite:///var/run/pylium/labs/t1/store.db"
    assert record.LabRecord.from_json(lab.to_json()) == lab


def test_daemons_are_recognised_by_node() -> None:
    agent = ["/v/bin/python", "/v/bin/pylium-agent", "--socket", "/var/run/pylium/t1-node1/a"]
    kubelet = ["/v/bin/python", "-m", "pylium.lab.kubelet", "--lab", "t1", "--node", "t1-node1"]
    assert is_agent_of("t1-node1")(agent) and not is_agent_of("t1-node10")(agent)
    assert is_kubelet_of("t1-node1")(kubelet) and not is_kubelet_of("t1-node10")(kubelet)
    assert not is_kubelet_of("t1-node1")(agent)
