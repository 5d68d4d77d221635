"""Run a CNI network configuration list the way libcni does, for the lab kubelet.

ADD execs each plugin of the conflist in order from the CNI bin dir; every plugin gets the
CNI env and, on stdin, its own conf plus the list's `name` and `cniVersion`, the previous
plugin's result as `prevResult`, and the runtime values of the capabilities it declares in
`runtimeConfig`. The last result is cached (libcni's `results/<net>-<container>-<ifname>`), and
DEL runs the plugins in reverse order with that cached result as `prevResult`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pylium import statefile

Result = dict[str, Any]


class CniError(Exception):
    """A plugin failed; carries the CNI error code and message it printed."""

    def __init__(self, plugin: str, command: str, code: int, msg: str, details: str = "") -> None:
        self.plugin = plugin
        self.command = command
        self.code = code
        self.msg = msg
        self.details = details
        text = f"CNI {command} {plugin}: {msg} (code {code})"
        super().__init__(f"{text}: {details}" if details else text)


@dataclass(frozen=True)
class Runtime:
    """The runtime side of one attachment (libcni's RuntimeConf)."""

    container_id: str
    netns: str
    ifname: str
    args: list[tuple[str, str]]
    capability_args: dict[str, Any] = field(default_factory=dict)

    def cni_args(self) -> str:
        """CNI_ARGS as kubelet sends it."""
        return ";".join(f"{k}={v}" for k, v in self.args)


def load_conflist(conf_dir: Path) -> dict[str, Any]:
    """The first `*.conflist` of the directory in lexical order, as libcni picks it."""
    files = sorted(conf_dir.glob("*.conflist"))
    if not files:
        raise FileNotFoundError(f"no *.conflist in {conf_dir}")
    conflist: dict[str, Any] = json.loads(files[0].read_text())
    return conflist


class CniChain:
    """One conflist bound to a CNI_PATH and a result cache directory."""

    def __init__(self, conflist: dict[str, Any], bin_dirs: list[Path], cache_dir: Path) -> None:
        self.conflist = conflist
        self.bin_dirs = bin_dirs
        self.cache_dir = cache_dir

    @property
    def name(self) -> str:
        """The network name."""
        return str(self.conflist["name"])

    def _cache_file(self, rt: Runtime) -> Path:
        return self.cache_dir / "results" / f"{self.name}-{rt.container_id}-{rt.ifname}"

    def cached_result(self, rt: Runtime) -> Result | None:
        """The result ADD cached for this attachment, if any."""
        try:
            data = statefile.read_json(self._cache_file(rt))
        except FileNotFoundError:
            return None
        result: Result | None = data.get("result")
        return result

    async def add(self, rt: Runtime) -> Result:
        """ADD through every plugin; returns (and caches) the final result."""
        result: Result | None = None
        for plugin in self.conflist["plugins"]:
            result = await self._exec("ADD", plugin, rt, result)
        assert result is not None, "a conflist has at least one plugin"
        self._write_cache(rt, result)
        return result

    async def delete(self, rt: Runtime) -> None:
        """DEL through every plugin in reverse order, then forget the cached result."""
        prev = self.cached_result(rt)
        for plugin in reversed(self.conflist["plugins"]):
            await self._exec("DEL", plugin, rt, prev)
        self._cache_file(rt).unlink(missing_ok=True)

    def _write_cache(self, rt: Runtime, result: Result) -> None:
        entry = {
            "kind": "cniCacheV1",
            "containerId": rt.container_id,
            "config": base64.b64encode(json.dumps(self.conflist).encode()).decode(),
            "ifName": rt.ifname,
            "networkName": self.name,
            "netns": rt.netns,
            "cniArgs": [list(a) for a in rt.args],
            "capabilityArgs": rt.capability_args,
            "result": result,
        }
        statefile.write_json(self._cache_file(rt), entry)

    def _find(self, plugin_type: str) -> Path:
        for d in self.bin_dirs:
            candidate = d / plugin_type
            if os.access(candidate, os.X_OK):
                return candidate
        raise CniError(plugin_type, "FIND", 1, f"plugin {plugin_type!r} not found in CNI_PATH")

    def _stdin(self, plugin: dict[str, Any], rt: Runtime, prev: Result | None) -> bytes:
        conf = dict(plugin)
        conf["name"] = self.name
        conf["cniVersion"] = self.conflist["cniVersion"]
        if prev is not None:
            conf["prevResult"] = prev
        runtime_config = {
            cap: rt.capability_args[cap]
            for cap, on in plugin.get("capabilities", {}).items()
            if on and cap in rt.capability_args
        }
        if runtime_config:
            conf["runtimeConfig"] = runtime_config
        return json.dumps(conf).encode()

    async def _exec(
        self, command: str, plugin: dict[str, Any], rt: Runtime, prev: Result | None
    ) -> Result | None:
        plugin_type = str(plugin["type"])
        exe = self._find(plugin_type)
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": rt.container_id,
            "CNI_NETNS": rt.netns,
            "CNI_IFNAME": rt.ifname,
            "CNI_ARGS": rt.cni_args(),
            "CNI_PATH": os.pathsep.join(str(d) for d in self.bin_dirs),
        }
        proc = await asyncio.create_subprocess_exec(
            str(exe),
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(self._stdin(plugin, rt, prev))
        if proc.returncode != 0:
            raise _plugin_error(plugin_type, command, out, err)
        if command != "ADD":
            return None
        result: Result = json.loads(out)
        return result


def _plugin_error(plugin: str, command: str, out: bytes, err: bytes) -> CniError:
    """The error a failed plugin printed on stdout (CNI spec), else its stderr."""
    try:
        data = json.loads(out)
        return CniError(
            plugin,
            command,
            int(data.get("code", 999)),
            str(data.get("msg", "")),
            str(data.get("details", "")),
        )
    except (ValueError, AttributeError):
        text = (out + err).decode(errors="replace").strip()
        return CniError(plugin, command, 999, text or "plugin failed without output")
