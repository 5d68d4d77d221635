"""The runtime side of CNI, as libcni does it: exec plugins of a network list in order.

Used to drive plugins the way podman or a kubelet would (benchmarks, conformance tests): all
six CNI variables always set (empty when unused), stdin = the plugin's object plus the list's
`name` and `cniVersion`, the previous result as `prevResult`, and `runtimeConfig` holding the
capability args the plugin declares. ADD runs in list order feeding each result to the next
plugin, DEL in reverse order with the final ADD result, CHECK in order with it. Stdlib only;
the plugin itself never imports this module.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Result = dict[str, Any]


class PluginError(Exception):
    """A plugin failed: its CNI error (from stdout, else its stderr text)."""

    def __init__(self, plugin: str, command: str, code: int, msg: str, details: str = "") -> None:
        super().__init__(
            f"{plugin} {command}: [{code}] {msg}" + (f": {details}" if details else "")
        )
        self.plugin = plugin
        self.command = command
        self.code = code
        self.msg = msg
        self.details = details


@dataclass(frozen=True)
class NetworkList:
    """A network configuration list (a .conflist)."""

    name: str
    cni_version: str
    plugins: list[dict[str, Any]]


@dataclass(frozen=True)
class Attachment:
    """One container's interface on a network (what libcni calls RuntimeConf)."""

    container_id: str
    netns: str
    ifname: str = "eth0"
    args: str = "IgnoreUnknown=1"
    capability_args: dict[str, Any] = field(default_factory=dict)


class CniRuntime:
    """Finds plugins on `path` (CNI_PATH) and runs network lists.

    `exec_prefix` (e.g. `nsenter --net=/var/run/netns/node --`) runs each plugin inside the
    node's netns, as a runtime living there would: chained plugins such as portmap and
    bridge change the netns they run in.
    """

    def __init__(
        self, path: Sequence[Path], exec_prefix: Sequence[str] = (), timeout: float = 60.0
    ) -> None:
        self.path = list(path)
        self.exec_prefix = list(exec_prefix)
        self.timeout = timeout

    def find(self, plugin_type: str) -> Path:
        """The first executable named `plugin_type` on the path."""
        for directory in self.path:
            candidate = directory / plugin_type
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"failed to find plugin {plugin_type!r} in path {self.path}")

    def add(self, net: NetworkList, att: Attachment) -> Result:
        """ADD through the list; returns the final result."""
        result: Result | None = None
        for plugin in net.plugins:
            out = self.exec_plugin(plugin, net, "ADD", att, prev_result=result)
            if out is None:
                raise PluginError(plugin["type"], "ADD", 999, "plugin printed no result")
            result = out
        assert result is not None
        return result

    def check(self, net: NetworkList, att: Attachment, result: Result) -> None:
        """CHECK each plugin in order against the cached ADD result."""
        for plugin in net.plugins:
            self.exec_plugin(plugin, net, "CHECK", att, prev_result=result)

    def delete(self, net: NetworkList, att: Attachment, result: Result | None) -> None:
        """DEL in reverse order with the cached result; raises the first error at the end."""
        errors: list[PluginError] = []
        for plugin in reversed(net.plugins):
            try:
                self.exec_plugin(plugin, net, "DEL", att, prev_result=result)
            except PluginError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def status(self, net: NetworkList) -> None:
        """STATUS per plugin in order, stopping at the first error (libcni >= 1.2)."""
        for plugin in net.plugins:
            self.exec_plugin(plugin, net, "STATUS", None)

    def gc(self, net: NetworkList, valid: list[Attachment]) -> None:
        """GC with the valid attachments under both keys libcni sends."""
        listed = [{"containerID": a.container_id, "ifname": a.ifname} for a in valid]
        extra = {"cni.dev/valid-attachments": listed, "cni.dev/attachments": listed}
        for plugin in net.plugins:
            self.exec_plugin(plugin, net, "GC", None, extra=extra)

    def exec_plugin(
        self,
        plugin: dict[str, Any],
        net: NetworkList,
        command: str,
        att: Attachment | None,
        prev_result: Result | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Result | None:
        """Run one plugin once; returns its decoded stdout (None when empty)."""
        conf = {**plugin, "name": net.name, "cniVersion": net.cni_version, **(extra or {})}
        if prev_result is not None:
            conf["prevResult"] = prev_result
        if att is not None:
            runtime_config = {
                key: value
                for key, value in att.capability_args.items()
                if (plugin.get("capabilities") or {}).get(key)
            }
            if runtime_config:
                conf["runtimeConfig"] = runtime_config
        env = {
            **os.environ,  # libcni passes its own environment plus the six variables
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": att.container_id if att else "",
            "CNI_NETNS": att.netns if att else "",
            "CNI_IFNAME": att.ifname if att else "",
            "CNI_ARGS": att.args if att else "",
            "CNI_PATH": ":".join(str(p) for p in self.path),
        }
        proc = subprocess.run(
            [*self.exec_prefix, str(self.find(plugin["type"]))],
            input=json.dumps(conf).encode(),
            env=env,
            capture_output=True,
            timeout=self.timeout,
            check=False,
        )
        out: Result | None = json.loads(proc.stdout) if proc.stdout.strip() else None
        if proc.returncode != 0:
            if out is None:  # libcni falls back to stderr text
                raise PluginError(plugin["type"], command, 999, proc.stderr.decode().strip())
            raise PluginError(
                plugin["type"],
                command,
                int(out.get("code", 999)),
                str(out.get("msg", "")),
                str(out.get("details", "")),
            )
        return out
