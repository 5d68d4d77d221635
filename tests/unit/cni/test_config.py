"""Validation of the network configuration on stdin (checklist section B)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pylium import paths
from pylium.cni.config import decode, parse_config
from pylium.cni.errors import DecodeFailure, IncompatibleVersion, InvalidConfig

BASE = {"cniVersion": "1.0.0", "name": "pylium", "type": "pylium-cni"}


def test_defaults():
    conf = parse_config(dict(BASE))
    assert conf.agent_socket == paths.DEFAULT_AGENT_SOCKET
    assert conf.mtu is None
    assert conf.prev_result is None


def test_runtime_keys_and_unknown_keys_are_accepted():
    """capabilities + runtimeConfig + args + cni.dev/* + plugin-foreign keys are all fine."""
    conf = parse_config(
        {
            **BASE,
            "agentSocket": "/var/run/pylium/n1/agent.sock",
            "mtu": 1450,
            "capabilities": {"portMappings": True},
            "runtimeConfig": {"portMappings": []},
            "args": {"cni": {"foo": 1}},
            "cni.dev/attachments": [],
            "fooBar": 1,
        }
    )
    assert conf.agent_socket == Path("/var/run/pylium/n1/agent.sock")
    assert conf.mtu == 1450


@pytest.mark.parametrize("stdin", [b"", b"{", b"[1]", b"not json"])
def test_bad_json_is_code_6(stdin):
    with pytest.raises(DecodeFailure) as info:
        decode(stdin)
    assert info.value.code == 6


@pytest.mark.parametrize(
    ("change", "error", "code"),
    [
        ({"name": None}, InvalidConfig, 7),
        ({"name": "a/b"}, InvalidConfig, 7),
        ({"cniVersion": "9.9.9"}, IncompatibleVersion, 1),
        ({"cniVersion": None}, IncompatibleVersion, 1),  # absent means 0.1.0
        ({"cniVersion": "x.y"}, DecodeFailure, 6),
        ({"mtu": 10}, InvalidConfig, 7),
        ({"mtu": "1500"}, InvalidConfig, 7),
        ({"mtu": True}, InvalidConfig, 7),
        ({"agentSocket": 5}, InvalidConfig, 7),
        ({"dns": {"nameservers": "1.1.1.1"}}, InvalidConfig, 7),
        ({"prevResult": {"ips": "x"}}, InvalidConfig, 7),
        ({"prevResult": {"cniVersion": "0.2.0"}}, IncompatibleVersion, 1),
    ],
)
def test_invalid_configs(change, error, code):
    obj = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    with pytest.raises(error) as info:
        parse_config(obj)
    assert info.value.code == code


def test_missing_name_message():
    with pytest.raises(InvalidConfig, match="missing network name"):
        parse_config({"cniVersion": "1.0.0", "type": "pylium-cni"})


def test_prev_result_takes_request_version_when_unset():
    """A 0.4.0 request's prevResult (with ips[].version) is read into the internal shape."""
    conf = parse_config(
        {
            **BASE,
            "cniVersion": "0.4.0",
            "prevResult": {"ips": [{"version": "4", "address": "10.0.0.2/24"}]},
        }
    )
    assert conf.prev_result is not None
    assert conf.prev_result["ips"] == [{"address": "10.0.0.2/24"}]


def test_dns_kept():
    conf = parse_config({**BASE, "dns": {"nameservers": ["10.96.0.10"], "search": ["svc"]}})
    assert conf.dns == {"nameservers": ["10.96.0.10"], "search": ["svc"]}
