"""Lab names: each lab finds exactly its own namespaces and nodes, never another lab's."""

from __future__ import annotations

import pytest

from pylium.lab import record
from pylium.lab.daemons import is_agent_of, is_kubelet_of, lab_daemons
from pylium.lab.storeproxy import etcd_endpoint


def test_netns_pattern_matches_only_its_lab() -> None:
    pattern = record.netns_pattern("t1")
    assert pattern.fullmatch(record.node_netns("t1", 1))
    assert pattern.fullmatch(record.pod_netns("t1", "default", "web"))
    assert pattern.fullmatch(record.underlay_netns("t1"))
    assert pattern.fullmatch(record.world_netns("t1"))
    for other in (
        "pyl-t1-node1x",
        "pyl-t1-x-node1",
        "pyl-t10-node1",
        "pyl-t1-p-zz",
        "lab",
        "pyl-t10-underlay",
        "pyl-t1-worlds",
    ):
        assert not pattern.fullmatch(other), other


def test_pod_netns_is_stable_and_distinct() -> None:
    a = record.pod_netns("lab", "default", "web")
    assert a == record.pod_netns("lab", "default", "web")
    assert a != record.pod_netns("lab", "other", "web")


def test_record_round_trips_through_json() -> None:
    lab = record.LabRecord.new("t1", 2)
    node1, node2 = lab.nodes
    assert (node1.name, node1.netns, node1.underlayIP) == (
        "t1-node1",
        "pyl-t1-node1",
        "192.168.64.2",
    )
    assert node2.underlayIP == "192.168.64.3"
    assert node1.podCIDR == ""  # the operator's to choose
    assert lab.store == "sqlite:///var/run/pylium/labs/t1/store.db"
    assert (lab.routing, lab.mtu) == ("native", 1500)
    node1.podCIDR = "10.244.0.0/24"
    assert record.LabRecord.from_json(lab.to_json()) == lab


def test_tunnel_pods_lose_the_vxlan_overhead_and_etcd_labs_get_a_key_root() -> None:
    lab = record.LabRecord.new(
        "t1", 1, uplink_mtu=9000, routing="tunnel", store="etcd://127.0.0.1:2379"
    )
    assert (lab.mtu, lab.uplinkMtu) == (8950, 9000)
    assert lab.store == "etcd://127.0.0.1:2379/t1"


def test_lab_daemons_are_recognised_by_lab() -> None:
    operator = ["/v/bin/pylium-operator", "--store", record.store_url("t1"), "--x", "y"]
    on_etcd = ["/v/bin/pylium-operator", "--store", "etcd://127.0.0.1:2379/t1"]
    matchers = lab_daemons("t1")
    assert matchers["operator"](operator) and matchers["operator"](on_etcd)
    assert not lab_daemons("t10")["operator"](operator)
    assert not lab_daemons("t10")["operator"](on_etcd)
    scheduler = ["/v/bin/python", "-m", "pylium.lab.scheduler", "--lab", "t1"]
    assert matchers["scheduler"](scheduler) and not lab_daemons("t10")["scheduler"](scheduler)
    world = ["/v/bin/python", "-m", "pylium.lab.podserver", "--name", "t1-world", "--tcp", "80"]
    assert matchers["world server"](world) and not matchers["scheduler"](world)
    relay = ["/v/bin/python", "-m", "pylium.hubble.relay", "--lab", "t1"]
    assert matchers["hubble relay"](relay) and not lab_daemons("t10")["hubble relay"](relay)
    assert not matchers["scheduler"](relay)


def test_the_etcd_proxy_accepts_one_loopback_etcd_only() -> None:
    assert etcd_endpoint("sqlite:///x/store.db") is None
    assert etcd_endpoint("etcd://127.0.0.1:2379/t1") == ("127.0.0.1", 2379)
    for bad in ("etcd://10.0.0.1:2379/t1", "etcd://127.0.0.1:1,127.0.0.1:2/t1"):
        with pytest.raises(ValueError, match="loopback"):
            etcd_endpoint(bad)


def test_daemons_are_recognised_by_node() -> None:
    agent = ["/v/bin/python", "/v/bin/pylium-agent", "--socket", "/var/run/pylium/t1-node1/a"]
    kubelet = ["/v/bin/python", "-m", "pylium.lab.kubelet", "--lab", "t1", "--node", "t1-node1"]
    assert is_agent_of("t1-node1")(agent) and not is_agent_of("t1-node10")(agent)
    assert is_kubelet_of("t1-node1")(kubelet) and not is_kubelet_of("t1-node10")(kubelet)
    assert not is_kubelet_of("t1-node1")(agent)
