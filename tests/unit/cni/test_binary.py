"""Exec the real `pylium-cni` binary as a runtime would: env + stdin in, JSON or nothing out.

The agent is either absent (error paths) or the scripted FakeAgent (no root needed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pylium.cni.delete_queue import MAX_QUEUED, queue_delete
from pylium.cni.errors import TryAgainLater

from .fake_agent import FakeAgent, serve

BINARY = Path(sys.executable).parent / "pylium-cni"
ENV_NAMES = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")

ENDPOINT = {
    "id": 3,
    "containerID": "c1",
    "ifname": "eth0",
    "ipv4": "10.244.1.5",
    "gateway": "10.244.1.1",
    "mac": "aa:00:00:00:00:02",
    "mtu": 1500,
    "hostIfname": "lxc0123456789a",
    "hostIfindex": 7,
    "hostMac": "aa:00:00:00:00:01",
    "state": "ready",
}


class Run:
    def __init__(self, proc: subprocess.CompletedProcess[bytes]) -> None:
        self.rc = proc.returncode
        self.stderr = proc.stderr.decode()
        # stdout is strictly one JSON document or nothing at all.
        self.out: dict[str, Any] | None = json.loads(proc.stdout) if proc.stdout else None

    @property
    def code(self) -> int:
        assert self.out is not None
        return int(self.out["code"])


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A file standing in for a netns path (ADD/CHECK only check that it exists)."""
    path = tmp_path / "netns"
    path.touch()
    return path


def cni(
    command: str,
    conf: dict[str, Any] | bytes | None,
    *,
    unset: tuple[str, ...] = (),
    **env: str,
) -> Run:
    """Run the binary with all six CNI variables set (empty when unused), like libcni."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    full.update({name: "" for name in ENV_NAMES})
    full["CNI_COMMAND"] = command
    full.update(env)
    for name in unset:
        full.pop(name, None)
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf or {}).encode()
    return Run(subprocess.run([BINARY], input=stdin, env=full, capture_output=True, check=False))


def conf(sock: Path, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    return {
        "cniVersion": version,
        "name": "pylium",
        "type": "pylium-cni",
        "agentSocket": str(sock),
        **extra,
    }


def add_env(netns: Path, cid: str = "c1") -> dict[str, str]:
    return {
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": str(netns),
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web;K8S_POD_NAMESPACE=default;FOO=bar",
        "CNI_PATH": "/opt/cni/bin",
    }


@pytest.mark.parametrize(
    ("stdin", "echoed"),
    [(b'{"cniVersion":"0.4.0"}', "0.4.0"), (b'{"cniVersion":"9.9.9"}', "1.1.0"), (b"", "1.1.0")],
)
def test_version(stdin, echoed):
    """VERSION echoes a supported request version and never fails, whatever stdin holds."""
    run = cni("VERSION", stdin, CNI_NETNS="dummy", CNI_IFNAME="dummy", CNI_PATH="dummy")
    assert run.rc == 0
    assert run.out == {
        "cniVersion": echoed,
        "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
    }


def test_unknown_command_is_code_4(tmp_path):
    run = cni("FOO", conf(tmp_path / "s"))
    assert (run.rc, run.code) == (1, 4)


def test_missing_vars_are_code_4_naming_them(tmp_path):
    run = cni("ADD", conf(tmp_path / "s"))
    assert (run.rc, run.code) == (1, 4)
    assert run.out is not None
    for name in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"):
        assert name in run.out["msg"]


def test_bad_json_is_code_6(sandbox):
    run = cni("ADD", b"{not json", **add_env(sandbox))
    assert (run.rc, run.code) == (1, 6)


def test_missing_name_is_code_7(sandbox, tmp_path):
    c = conf(tmp_path / "s")
    del c["name"]
    run = cni("ADD", c, **add_env(sandbox))
    assert (run.rc, run.code) == (1, 7)
    assert run.out is not None and run.out["msg"] == "missing network name"


def test_unsupported_version_is_code_1_with_details(sandbox, tmp_path):
    run = cni("ADD", conf(tmp_path / "s", "9.9.9"), **add_env(sandbox))
    assert (run.rc, run.code) == (1, 1)
    assert run.out is not None and "1.1.0" in run.out["details"]


def test_bad_container_id_and_ifname_are_code_4(sandbox, tmp_path):
    assert cni("ADD", conf(tmp_path / "s"), **add_env(sandbox, "bad id")).code == 4
    e = add_env(sandbox) | {"CNI_IFNAME": "averyveryverylongname"}
    assert cni("ADD", conf(tmp_path / "s"), **e).code == 4


def test_own_netns_is_code_8(tmp_path):
    """CNI_NETNS=/proc/self/ns/net is the plugin's own netns: refused before any agent call."""
    e = add_env(tmp_path) | {"CNI_NETNS": "/proc/self/ns/net"}
    assert cni("ADD", conf(tmp_path / "s"), **e).code == 8


def test_status_without_agent_is_50(tmp_path):
    run = cni("STATUS", conf(tmp_path / "agent.sock", "1.1.0"))
    assert (run.rc, run.code) == (1, 50)


def test_status_and_gc_need_1_1_0(tmp_path):
    assert cni("STATUS", conf(tmp_path / "s", "1.0.0")).code == 1
    assert cni("GC", conf(tmp_path / "s", "1.0.0"), CNI_PATH="/x").code == 1


def test_gc_needs_cni_path(tmp_path):
    run = cni("GC", conf(tmp_path / "s", "1.1.0"))
    assert run.code == 4 and run.out is not None and "CNI_PATH" in run.out["msg"]


def test_check_needs_0_4_0(sandbox, tmp_path):
    assert cni("CHECK", conf(tmp_path / "s", "0.3.1"), **add_env(sandbox)).code == 1


def test_add_without_agent_is_11_and_says_what_to_do(sandbox, tmp_path):
    run = cni("ADD", conf(tmp_path / "agent.sock"), **add_env(sandbox))
    assert (run.rc, run.code) == (1, 11)
    assert run.out is not None and "start pylium-agent" in run.out["details"]


@pytest.mark.parametrize("netns", ["", "/nonexistent/netns"])
def test_del_without_agent_queues_and_succeeds(tmp_path, netns):
    """No agent: DEL exits 0 with empty stdout and leaves a request for the agent."""
    sock = tmp_path / "agent.sock"
    run = cni("DEL", conf(sock), CNI_CONTAINERID="c1", CNI_IFNAME="eth0", CNI_NETNS=netns)
    assert (run.rc, run.out) == (0, None)
    queued = json.loads((tmp_path / "delete-queue" / "c1.eth0.json").read_text())
    assert (queued["containerID"], queued["ifname"], queued["netns"]) == ("c1", "eth0", netns)


def test_delete_queue_is_bounded(tmp_path):
    for i in range(MAX_QUEUED):
        queue_delete(tmp_path, f"c{i}", "eth0", "")
    queue_delete(tmp_path, "c0", "eth0", "")  # re-queueing a queued one still fits
    with pytest.raises(TryAgainLater):
        queue_delete(tmp_path, "one-too-many", "eth0", "")


@pytest.fixture
def agent(tmp_path: Path):
    with serve(tmp_path / "agent.sock") as fake:
        yield fake


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_add_result_per_version(agent: FakeAgent, sandbox, version):
    """ADD sends the EndpointRequest and answers the result in the requested version."""
    agent.answers[("PUT", "/v1/endpoints")] = (201, ENDPOINT)
    run = cni(
        "ADD", conf(agent.socket, version, mtu=1400, dns={"search": ["svc"]}), **add_env(sandbox)
    )
    assert run.rc == 0, run.out
    assert agent.requests == [
        (
            "PUT",
            "/v1/endpoints",
            {
                "containerID": "c1",
                "ifname": "eth0",
                "netns": str(sandbox),
                "podName": "web",
                "podNamespace": "default",
                "mtu": 1400,
                "mac": None,
            },
        )
    ]
    out = run.out
    assert out is not None and out["cniVersion"] == version
    assert out["interfaces"][0] == {"name": "lxc0123456789a", "mac": "aa:00:00:00:00:01"}
    assert out["interfaces"][1]["sandbox"] == str(sandbox)
    assert out["interfaces"][1]["mac"] == "aa:00:00:00:00:02"
    ip = out["ips"][0]
    assert (ip["address"], ip["gateway"], ip["interface"]) == ("10.244.1.5/32", "10.244.1.1", 1)
    assert ip.get("version") == ("4" if version.startswith("0.") else None)
    assert out["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}]
    assert out["dns"] == {"search": ["svc"]}


def test_add_passes_mac_and_says_static_ip_is_ignored(agent: FakeAgent, sandbox):
    """podman's --mac-address/--ip arrive as CNI_ARGS MAC=/IP=: MAC goes to the agent, IP is
    not supported (the agent's IPAM assigns addresses) and the plugin says so on stderr."""
    agent.answers[("PUT", "/v1/endpoints")] = (201, ENDPOINT)
    env = add_env(sandbox) | {"CNI_ARGS": "IgnoreUnknown=1;IP=10.244.1.77;MAC=c2:11:22:33:44:55"}
    run = cni("ADD", conf(agent.socket), **env)
    assert run.rc == 0
    assert agent.requests[0][2]["mac"] == "c2:11:22:33:44:55"
    assert "IP= ignored" in run.stderr


def test_add_passes_agent_error_code(agent: FakeAgent, sandbox):
    agent.answers[("PUT", "/v1/endpoints")] = (503, {"code": 11, "msg": "no free address"})
    run = cni("ADD", conf(agent.socket), **add_env(sandbox))
    assert run.out == {"cniVersion": "1.0.0", "code": 11, "msg": "no free address"}


def test_add_rolls_back_on_malformed_endpoint(agent: FakeAgent, sandbox):
    """If the plugin cannot build a result, it deletes the endpoint the agent made."""
    agent.answers[("PUT", "/v1/endpoints")] = (201, {"id": 1})
    agent.answers[("DELETE", "/v1/endpoints")] = (204, None)
    run = cni("ADD", conf(agent.socket), **add_env(sandbox))
    assert (run.rc, run.code) == (1, 999)
    assert [r[:2] for r in agent.requests] == [
        ("PUT", "/v1/endpoints"),
        ("DELETE", "/v1/endpoints?containerID=c1&ifname=eth0"),
    ]


def test_add_with_nonexistent_netns_is_code_3(agent: FakeAgent, tmp_path):
    run = cni("ADD", conf(agent.socket), **add_env(tmp_path / "gone"))
    assert run.code == 3
    assert agent.requests == []


def test_del_calls_agent(agent: FakeAgent):
    agent.answers[("DELETE", "/v1/endpoints")] = (204, None)
    run = cni("DEL", conf(agent.socket), CNI_CONTAINERID="c1", CNI_IFNAME="eth0")
    assert (run.rc, run.out) == (0, None)
    assert agent.requests == [("DELETE", "/v1/endpoints?containerID=c1&ifname=eth0", None)]


def test_check(agent: FakeAgent, sandbox):
    """CHECK finds the endpoint, compares it with prevResult and asks the agent to verify."""
    agent.answers[("GET", "/v1/endpoints")] = (200, [ENDPOINT])
    agent.answers[("POST", "/v1/endpoints/3/check")] = (200, {})
    prev = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.244.1.5/32"}]}
    run = cni("CHECK", conf(agent.socket, "0.4.0", prevResult=prev), **add_env(sandbox))
    assert (run.rc, run.out) == (0, None)
    assert agent.requests[-1] == ("POST", "/v1/endpoints/3/check", {"netns": str(sandbox)})

    agent.answers[("POST", "/v1/endpoints/3/check")] = (409, {"code": 999, "msg": "no address"})
    assert (
        cni("CHECK", conf(agent.socket, "0.4.0", prevResult=prev), **add_env(sandbox)).code == 999
    )

    other = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.9.9.9/32"}]}
    run = cni("CHECK", conf(agent.socket, "0.4.0", prevResult=other), **add_env(sandbox))
    assert run.rc == 1 and run.out is not None and "prevResult" in run.out["msg"]

    assert cni("CHECK", conf(agent.socket, "0.4.0"), **add_env(sandbox)).code == 7


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            ("cni.dev/valid-attachments", "cni.dev/attachments"),
            [{"containerID": "a", "ifname": "eth0"}],
        ),
        (("cni.dev/attachments",), [{"containerID": "b", "ifname": "eth1"}]),
    ],
)
def test_gc_prefers_valid_attachments(agent: FakeAgent, keys, expected):
    agent.answers[("POST", "/v1/endpoints/gc")] = (200, {"removed": [ENDPOINT]})
    lists = {
        "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
        "cni.dev/attachments": [{"containerID": "b", "ifname": "eth1"}],
    }
    c = conf(agent.socket, "1.1.0", **{k: lists[k] for k in keys})
    run = cni("GC", c, CNI_PATH="/opt/cni/bin")
    assert (run.rc, run.out) == (0, None)  # no stdout on success
    assert agent.requests == [("POST", "/v1/endpoints/gc", {"valid": expected})]


def test_gc_without_any_list_removes_nothing(agent: FakeAgent):
    run = cni("GC", conf(agent.socket, "1.1.0"), CNI_PATH="/opt/cni/bin")
    assert run.code == 7
    assert agent.requests == []


def test_status_with_agent(agent: FakeAgent):
    agent.answers[("GET", "/v1/healthz")] = (200, {"status": "ok", "ipam": {"available": 200}})
    assert cni("STATUS", conf(agent.socket, "1.1.0")).rc == 0
    agent.answers[("GET", "/v1/healthz")] = (503, {"code": 11, "msg": "waiting for CiliumNode"})
    run = cni("STATUS", conf(agent.socket, "1.1.0"))
    assert run.code == 50 and run.out is not None and "CiliumNode" in run.out["msg"]
    agent.answers[("GET", "/v1/healthz")] = (200, {"status": "ok", "ipam": {"available": 0}})
    assert cni("STATUS", conf(agent.socket, "1.1.0")).code == 50
