"""Validation of the CNI_* environment, case by case (checklist section A)."""

from __future__ import annotations

import os

import pytest

from pylium.cni.env import CniEnv, check_netns, parse_cni_args, parse_env
from pylium.cni.errors import InvalidEnvironment, InvalidNetns

FULL = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c1",
    "CNI_NETNS": "/run/netns/x",
    "CNI_IFNAME": "eth0",
    "CNI_ARGS": "",
    "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
}


def env(**overrides: str) -> dict[str, str]:
    return {**FULL, **overrides}


def test_full_add():
    parsed = parse_env(env(CNI_ARGS="IgnoreUnknown=1;FOO=bar;K8S_POD_NAME=p"))
    assert parsed.container_id == "c1"
    assert parsed.args["K8S_POD_NAME"] == "p"


@pytest.mark.parametrize(
    ("command", "var"),
    [
        ("ADD", "CNI_CONTAINERID"),
        ("ADD", "CNI_NETNS"),
        ("ADD", "CNI_IFNAME"),
        ("CHECK", "CNI_NETNS"),
        ("DEL", "CNI_CONTAINERID"),
        ("DEL", "CNI_IFNAME"),
        ("GC", "CNI_PATH"),
    ],
)
@pytest.mark.parametrize("how", ["unset", "empty"])
def test_missing_variable_is_code_4_naming_it(command, var, how):
    """Unset and empty both count as missing; the message names the variable."""
    e = env(CNI_COMMAND=command)
    if how == "unset":
        del e[var]
    else:
        e[var] = ""
    with pytest.raises(InvalidEnvironment) as info:
        parse_env(e)
    assert info.value.code == 4
    assert var in info.value.msg


def test_del_without_netns_is_fine():
    assert parse_env(env(CNI_COMMAND="DEL", CNI_NETNS="")).netns == ""


@pytest.mark.parametrize("command", ["VERSION", "STATUS"])
def test_version_and_status_need_nothing_else(command):
    assert parse_env({"CNI_COMMAND": command}).command == command


def test_version_ignores_dummy_values():
    """libcni probes VERSION with CNI_NETNS=dummy etc.; an invalid ifname must not matter."""
    assert parse_env({"CNI_COMMAND": "VERSION", "CNI_IFNAME": "a/b"}) == CniEnv("VERSION")


@pytest.mark.parametrize("command", ["", "FOO", "add"])
def test_unknown_command_is_code_4(command):
    with pytest.raises(InvalidEnvironment):
        parse_env(env(CNI_COMMAND=command))


@pytest.mark.parametrize("cid", ["bad id", "-lead", "a/b", "x;y"])
def test_bad_container_id_is_code_4(cid):
    with pytest.raises(InvalidEnvironment) as info:
        parse_env(env(CNI_CONTAINERID=cid))
    assert info.value.code == 4


@pytest.mark.parametrize("ifname", ["averyveryverylongname", ".", "..", "a/b", "a:b", "a b"])
def test_bad_ifname_is_code_4(ifname):
    with pytest.raises(InvalidEnvironment) as info:
        parse_env(env(CNI_IFNAME=ifname))
    assert "CNI_IFNAME" in info.value.msg


def test_ifname_of_15_bytes_is_fine():
    assert parse_env(env(CNI_IFNAME="a" * 15)).ifname == "a" * 15


def test_cni_args_unknown_key_needs_ignore_unknown():
    with pytest.raises(InvalidEnvironment) as info:
        parse_cni_args("FOO=bar")
    assert "FOO" in info.value.msg
    assert parse_cni_args("IgnoreUnknown=true;FOO=bar") == {"IgnoreUnknown": "true", "FOO": "bar"}
    assert parse_cni_args("K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns") == {
        "K8S_POD_NAME": "p",
        "K8S_POD_NAMESPACE": "ns",
    }


def test_cni_args_pair_without_equals_is_invalid():
    with pytest.raises(InvalidEnvironment):
        parse_cni_args("IgnoreUnknown=1;novalue")


def test_own_netns_refused_unless_override():
    """CNI_NETNS naming the plugin's own netns is code 8; CNI_NETNS_OVERRIDE=1 allows it."""
    own = f"/proc/{os.getpid()}/ns/net"
    with pytest.raises(InvalidNetns) as info:
        check_netns(CniEnv("ADD", "c1", own, "eth0"))
    assert info.value.code == 8
    check_netns(CniEnv("ADD", "c1", own, "eth0", netns_override=True))
    check_netns(CniEnv("DEL", "c1", "/nonexistent/netns", "eth0"))
