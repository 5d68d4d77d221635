"""The libcni-like runtime used by the conformance suite and the benchmark: order of a chain,
prevResult passing, runtimeConfig only for declared capabilities, errors read from stdout."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pylium.cni.runtime import Attachment, CniRuntime, NetworkList, PluginError

# A plugin that logs (name, command, env, stdin) and answers its prevResult plus one interface.
RECORDER = f"""#!{sys.executable}
import json, os, sys
conf = json.load(sys.stdin)
name = os.path.basename(sys.argv[0])
env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
with open(os.environ["LOG"], "a") as log:
    log.write(json.dumps([name, env["CNI_COMMAND"], env, conf]) + "\\n")
if conf.get("fail"):
    print(json.dumps({{"code": 7, "msg": "told to fail"}}))
    sys.exit(1)
if env["CNI_COMMAND"] == "ADD":
    out = conf.get("prevResult") or {{"cniVersion": conf["cniVersion"], "interfaces": []}}
    out["interfaces"] = out["interfaces"] + [{{"name": name}}]
    print(json.dumps(out))
"""


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("first", "second"):
        (bin_dir / name).write_text(RECORDER)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("LOG", str(tmp_path / "log"))
    return bin_dir


def log(plugins: Path) -> list[list]:
    return [json.loads(line) for line in (plugins.parent / "log").read_text().splitlines()]


NET = NetworkList(
    "net",
    "1.0.0",
    [{"type": "first"}, {"type": "second", "capabilities": {"portMappings": True}}],
)
ATT = Attachment("c1", "/run/netns/x", capability_args={"portMappings": [{"hostPort": 1}]})


def test_add_chain_then_del_in_reverse(plugins: Path, tmp_path: Path):
    runtime = CniRuntime([tmp_path / "missing", plugins])  # found in the 2nd path entry
    result = runtime.add(NET, ATT)
    assert [i["name"] for i in result["interfaces"]] == ["first", "second"]
    runtime.delete(NET, ATT, result)
    calls = log(plugins)
    assert [(c[0], c[1]) for c in calls] == [
        ("first", "ADD"),
        ("second", "ADD"),
        ("second", "DEL"),
        ("first", "DEL"),
    ]
    first_add, second_add = calls[0][3], calls[1][3]
    assert "prevResult" not in first_add
    assert second_add["prevResult"]["interfaces"] == [{"name": "first"}]
    assert (first_add["name"], first_add["cniVersion"]) == ("net", "1.0.0")
    assert "runtimeConfig" not in first_add  # no capability declared
    assert second_add["runtimeConfig"] == {"portMappings": [{"hostPort": 1}]}
    assert calls[3][3]["prevResult"] == result
    env = calls[0][2]
    assert env["CNI_ARGS"] == "IgnoreUnknown=1"
    assert env["CNI_PATH"] == f"{tmp_path / 'missing'}:{plugins}"


def test_gc_and_status_send_empty_attachment_vars(plugins: Path):
    runtime = CniRuntime([plugins])
    runtime.gc(NET, [ATT])
    runtime.status(NET)
    calls = log(plugins)
    gc = calls[0]
    assert gc[3]["cni.dev/valid-attachments"] == [{"containerID": "c1", "ifname": "eth0"}]
    assert gc[3]["cni.dev/attachments"] == gc[3]["cni.dev/valid-attachments"]
    for call in calls:
        assert call[2]["CNI_CONTAINERID"] == call[2]["CNI_NETNS"] == call[2]["CNI_IFNAME"] == ""


def test_error_read_from_stdout_and_chain_stops(plugins: Path):
    net = NetworkList("net", "1.0.0", [{"type": "first", "fail": True}, {"type": "second"}])
    with pytest.raises(PluginError) as info:
        CniRuntime([plugins]).add(net, ATT)
    assert (info.value.plugin, info.value.code, info.value.msg) == ("first", 7, "told to fail")
    assert [c[0] for c in log(plugins)] == ["first"]


def test_missing_plugin(plugins: Path):
    with pytest.raises(FileNotFoundError, match="nope"):
        CniRuntime([plugins]).add(NetworkList("n", "1.0.0", [{"type": "nope"}]), ATT)
