"""The lab kubelet runs a conflist as libcni does: order, stdin, env, cache, reverse DEL."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from pylium.lab.cnichain import CniChain, CniError, Runtime

# A fake plugin: appends what it was given to calls.jsonl, then answers like a CNI plugin.
FAKE = """#!{python}
import json, os, sys
conf = json.load(sys.stdin)
env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
with open({log!r}, "a") as f:
    f.write(json.dumps({{"plugin": {name!r}, "env": env, "conf": conf}}) + "\\n")
if conf.get("fail"):
    print(json.dumps({{"code": 11, "msg": "try again", "details": "agent away"}}))
    sys.exit(1)
if env["CNI_COMMAND"] == "ADD":
    prev = conf.get("prevResult") or {{"cniVersion": conf["cniVersion"], "ips": []}}
    prev = dict(prev, ips=prev["ips"] + [{{"address": {address!r}}}])
    print(json.dumps(prev))
"""


def _plugin(bin_dir: Path, name: str, log: Path, address: str) -> None:
    path = bin_dir / name
    text = FAKE.format(python=sys.executable, log=str(log), name=name, address=address)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def chain(tmp_path: Path) -> CniChain:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _plugin(bin_dir, "first", tmp_path / "calls.jsonl", "10.0.0.5/32")
    _plugin(bin_dir, "second", tmp_path / "calls.jsonl", "10.0.0.6/32")
    conflist = {
        "cniVersion": "1.0.0",
        "name": "net",
        "plugins": [
            {"type": "first", "mtu": 1400},
            {"type": "second", "capabilities": {"portMappings": True}},
        ],
    }
    return CniChain(conflist, [bin_dir], tmp_path / "cache")


RT = Runtime(
    container_id="abc",
    netns="/var/run/netns/x",
    ifname="eth0",
    args=[("IgnoreUnknown", "1"), ("K8S_POD_NAME", "web")],
    capability_args={"portMappings": [], "bandwidth": {"rate": 1}},
)


def _calls(chain: CniChain) -> list[dict[str, Any]]:
    path = chain.cache_dir.parent / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_add_chains_plugins_in_order_with_prev_result(chain: CniChain) -> None:
    result = await chain.add(RT)
    assert [ip["address"] for ip in result["ips"]] == ["10.0.0.5/32", "10.0.0.6/32"]
    first, second = _calls(chain)
    assert first["plugin"] == "first" and second["plugin"] == "second"
    assert first["conf"] == {"type": "first", "mtu": 1400, "name": "net", "cniVersion": "1.0.0"}
    assert second["conf"]["prevResult"]["ips"] == [{"address": "10.0.0.5/32"}]
    # Only the capabilities a plugin declares reach it.
    assert second["conf"]["runtimeConfig"] == {"portMappings": []}
    assert first["env"] == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "abc",
        "CNI_NETNS": "/var/run/netns/x",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web",
        "CNI_PATH": str(chain.bin_dirs[0]),
    }
    assert chain.cached_result(RT) == result


async def test_del_runs_in_reverse_with_the_cached_result(chain: CniChain) -> None:
    result = await chain.add(RT)
    await chain.delete(RT)
    dels = [c for c in _calls(chain) if c["env"]["CNI_COMMAND"] == "DEL"]
    assert [c["plugin"] for c in dels] == ["second", "first"]
    assert all(c["conf"]["prevResult"] == result for c in dels)
    assert chain.cached_result(RT) is None


async def test_a_failing_plugin_raises_its_cni_error(chain: CniChain) -> None:
    chain.conflist["plugins"][1]["fail"] = True
    with pytest.raises(CniError) as err:
        await chain.add(RT)
    assert (err.value.plugin, err.value.code, err.value.msg) == ("second", 11, "try again")
    assert chain.cached_result(RT) is None


async def test_a_missing_plugin_is_an_error(chain: CniChain) -> None:
    chain.conflist["plugins"].append({"type": "absent"})
    with pytest.raises(CniError, match="not found"):
        await chain.add(RT)
