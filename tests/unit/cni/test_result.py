"""The ADD result built from the agent's Endpoint, alone and chained after another plugin."""

from __future__ import annotations

from pylium.cni.result import build_result
from pylium.cni.versions import from_internal

ENDPOINT = {
    "id": 3,
    "containerID": "c1",
    "ifname": "eth0",
    "netns": "/run/netns/t",
    "ipv4": "10.244.1.5",
    "gateway": "10.244.1.1",
    "mac": "aa:00:00:00:00:02",
    "mtu": 1500,
    "hostIfname": "lxc0123456789a",
    "hostIfindex": 7,
    "hostMac": "aa:00:00:00:00:01",
}


def test_alone():
    """Host veth without sandbox, container iface with sandbox+mac, /32 ip, default route."""
    result = build_result(ENDPOINT, "/run/netns/t", {})
    assert result["interfaces"] == [
        {"name": "lxc0123456789a", "mac": "aa:00:00:00:00:01"},
        {"name": "eth0", "mac": "aa:00:00:00:00:02", "sandbox": "/run/netns/t", "mtu": 1500},
    ]
    assert result["ips"] == [{"address": "10.244.1.5/32", "gateway": "10.244.1.1", "interface": 1}]
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}]
    assert "dns" not in result


def test_dns_from_config():
    result = build_result(ENDPOINT, "/run/netns/t", {"nameservers": ["10.96.0.10"]})
    assert result["dns"] == {"nameservers": ["10.96.0.10"]}


def test_chained_keeps_prev_result_and_shifts_indexes():
    """A prevResult is kept whole; pylium's entries follow with indexes past the previous ones."""
    prev = {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "net1", "mac": "aa:00:00:00:00:09", "sandbox": "/run/netns/t"}],
        "ips": [{"address": "192.168.0.2/24", "interface": 0}],
        "routes": [{"dst": "192.168.0.0/16"}],
        "dns": {"domain": "example"},
    }
    result = build_result(ENDPOINT, "/run/netns/t", {"nameservers": ["1.1.1.1"]}, prev)
    assert [i["name"] for i in result["interfaces"]] == ["net1", "lxc0123456789a", "eth0"]
    assert result["ips"] == [
        {"address": "192.168.0.2/24", "interface": 0},
        {"address": "10.244.1.5/32", "gateway": "10.244.1.1", "interface": 2},
    ]
    assert result["routes"] == [
        {"dst": "192.168.0.0/16"},
        {"dst": "0.0.0.0/0", "gw": "10.244.1.1"},
    ]
    assert result["dns"] == {"domain": "example", "nameservers": ["1.1.1.1"]}
    assert prev["ips"] == [{"address": "192.168.0.2/24", "interface": 0}]  # not modified


def test_a_later_interface_reports_its_default_route_in_its_table():
    """eth1 after eth0: the agent put its routes in a table of its own (1.1.0's routes[].table);
    converting to an older version drops the field."""
    eth1 = {**ENDPOINT, "ifname": "eth1", "sourceTable": 1004}
    result = build_result(eth1, "/run/netns/t", {})
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.1.1", "table": 1004}]
    assert from_internal(result, "1.0.0")["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}]
