"""A libcni-like harness around a real agent, for the CNI conformance tests.

`CniHarness` owns a scratch node (its own netns, store and `pylium-agent`), runs plugins the
way libcni does (`pylium.cni.runtime.CniRuntime`, exec'd inside the node netns like a
runtime living there), makes pod namespaces on demand, and removes all of it at the end.
`exec_raw` runs the binary with a hand-made environment for the error paths.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pylium.bench.scratch import ScratchNode, netns_add, netns_del, unique_name
from pylium.cni.runtime import Attachment, CniRuntime, NetworkList
from tests.support import wait_for

PREFIX = "pyl-tc-"
"""This suite's netns prefix (node and pods)."""

VENV_BIN = Path(sys.executable).parent
REFERENCE_PLUGINS = Path("/usr/lib/cni")
POD_CIDR = "10.244.7.0/24"
ARGS = "IgnoreUnknown=1;FOO=bar;K8S_POD_NAME=web;K8S_POD_NAMESPACE=default"
CNI_VARS = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")


class CniHarness:
    """One node with a real agent, plus the runtime side of CNI."""

    def __init__(self, node: ScratchNode) -> None:
        self.node = node
        # pylium-cni sits in the SECOND CNI_PATH entry: the runtime must search the whole path.
        self.runtime = CniRuntime([REFERENCE_PLUGINS, VENV_BIN], exec_prefix=node.exec_prefix())
        self._pods: list[str] = []

    # --- configuration -------------------------------------------------------------------

    def plugin(self, **extra: Any) -> dict[str, Any]:
        """pylium-cni's plugin object, pointing at this node's agent."""
        return {"type": "pylium-cni", "agentSocket": str(self.node.socket), **extra}

    def network(self, version: str, *more: dict[str, Any], **extra: Any) -> NetworkList:
        """A list with pylium-cni first, then `more` plugins (chaining)."""
        return NetworkList("pylium", version, [self.plugin(**extra), *more])

    # --- pods ----------------------------------------------------------------------------

    def pod(self) -> str:
        """A new pod netns (removed at close); returns its path."""
        name = unique_name(PREFIX)
        self._pods.append(name)
        return netns_add(name)

    def attachment(self, netns: str, ifname: str = "eth0", **kw: Any) -> Attachment:
        """An attachment with a fresh container ID and runtime-like CNI_ARGS."""
        return Attachment(unique_name("ctr-"), netns, ifname, kw.pop("args", ARGS), **kw)

    # --- observations --------------------------------------------------------------------

    def ip(self, netns: str, *args: str) -> Any:
        """`ip -j ...` inside a netns path, decoded."""
        out = subprocess.run(
            ["nsenter", f"--net={netns}", "--", "ip", "-j", *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return json.loads(out) if out.strip() else []

    def addresses(self, netns: str, ifname: str) -> list[str]:
        """IPv4 addresses (CIDR) on an interface in a netns; [] when it does not exist."""
        if not any(link["ifname"] == ifname for link in self.ip(netns, "link", "show")):
            return []
        (link,) = self.ip(netns, "-4", "addr", "show", "dev", ifname)
        return [f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"]]

    def host_veths(self) -> set[str]:
        """The lxc* interfaces in the node netns."""
        links = self.ip(self.node_path, "link", "show")
        return {link["ifname"] for link in links if link["ifname"].startswith("lxc")}

    def wait_veths_gone(self, names: set[str] | None = None) -> None:
        """Wait until the named lxc interfaces (every one when None) are gone: DEL returns once
        the address and routes are released, the agent deletes the veth pair just after."""
        wait_for(lambda: not (self.host_veths() & names if names else self.host_veths()))

    def used_ips(self) -> set[str]:
        """Addresses the agent's endpoints hold."""
        return {ep["ipv4"] for ep in self.node.agent.endpoints()}

    @property
    def node_path(self) -> str:
        return f"/var/run/netns/{self.node.netns}"

    # --- raw exec ------------------------------------------------------------------------

    def exec_raw(self, env: dict[str, str], conf: dict[str, Any]) -> tuple[int, Any]:
        """Run pylium-cni in the node netns with all six variables (empty unless given)."""
        full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        full.update({name: "" for name in CNI_VARS})
        full.update(env)
        proc = subprocess.run(
            [*self.node.exec_prefix(), str(VENV_BIN / "pylium-cni")],
            input=json.dumps(conf).encode(),
            env=full,
            capture_output=True,
            check=False,
        )
        return proc.returncode, json.loads(proc.stdout) if proc.stdout else None

    def close(self) -> None:
        for name in self._pods:
            netns_del(name)
        self._pods.clear()


@contextmanager
def cni_harness(workdir: Path, mtu: int | None = None) -> Iterator[CniHarness]:
    """A harness on a fresh scratch node; everything is removed on exit."""
    with ScratchNode(PREFIX, workdir, POD_CIDR, mtu=mtu) as node:
        harness = CniHarness(node)
        try:
            yield harness
        finally:
            harness.close()
