"""Result conversion between CNI versions: one internal (1.1.0) shape, converted on the way out."""

from __future__ import annotations

import pytest

from pylium.cni.errors import DecodeFailure, IncompatibleVersion
from pylium.cni.versions import from_internal, parse_version, require_supported, to_internal

INTERNAL = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {"name": "lxc0123456789a", "mac": "aa:00:00:00:00:01", "mtu": 1500},
        {"name": "eth0", "mac": "aa:00:00:00:00:02", "sandbox": "/run/netns/t", "mtu": 1500},
    ],
    "ips": [
        {"address": "10.244.1.5/32", "gateway": "10.244.1.1", "interface": 1},
        {"address": "fd00::5/128", "gateway": "fd00::1", "interface": 1},
    ],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1", "scope": 0, "table": 254}],
    "dns": {"nameservers": ["10.96.0.10"]},
}


@pytest.mark.parametrize(
    ("version", "ip_versions", "keeps_1_1_fields"),
    [
        ("0.3.0", ["4", "6"], False),
        ("0.3.1", ["4", "6"], False),
        ("0.4.0", ["4", "6"], False),
        ("1.0.0", [None, None], False),
        ("1.1.0", [None, None], True),
    ],
)
def test_from_internal_table(version, ip_versions, keeps_1_1_fields):
    """Each version gets its cniVersion; `ips[].version` only in 0.x; 1.1 keys only in 1.1."""
    out = from_internal(INTERNAL, version)
    assert out["cniVersion"] == version
    assert [ip.get("version") for ip in out["ips"]] == ip_versions
    assert [ip["interface"] for ip in out["ips"]] == [1, 1]
    assert ("mtu" in out["interfaces"][1]) is keeps_1_1_fields
    assert ("table" in out["routes"][0]) is keeps_1_1_fields
    assert out["interfaces"][1]["sandbox"] == "/run/netns/t"
    assert out["dns"] == INTERNAL["dns"]
    assert INTERNAL["ips"][0].get("version") is None  # the input is not modified


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_round_trip(version):
    """A result converted down and back up keeps interfaces, addresses and indexes."""
    back = to_internal(from_internal(INTERNAL, version))
    assert back["cniVersion"] == "1.1.0"
    assert back["ips"] == [{k: v for k, v in ip.items()} for ip in INTERNAL["ips"]]
    assert [i["name"] for i in back["interfaces"]] == ["lxc0123456789a", "eth0"]


def test_to_internal_drops_ip_version():
    """A 0.4.0 prevResult loses `ips[].version` in the internal shape."""
    prev = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.0.0.2/24"}]}
    assert to_internal(prev)["ips"] == [{"address": "10.0.0.2/24"}]


@pytest.mark.parametrize(
    ("version", "error"),
    [("0.2.0", IncompatibleVersion), ("9.9.9", IncompatibleVersion), ("one", DecodeFailure)],
)
def test_unsupported_versions(version, error):
    """Well-formed unknown versions are code 1 with the supported list; malformed ones code 6."""
    with pytest.raises(error) as info:
        require_supported(version)
    if error is IncompatibleVersion:
        assert "1.1.0" in info.value.details


def test_parse_version_orders():
    assert parse_version("0.4.0") < parse_version("1.0.0") < parse_version("1.1.0")
