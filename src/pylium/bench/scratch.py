"""A throw-away node for benchmarks and conformance tests: a netns running a real agent.

`ScratchNode` makes a network namespace, a sqlite store holding the node's CiliumNode (its pod
CIDR), and runs `pylium-agent` inside the namespace with its socket and state in a private
directory. Nothing touches the root netns; `close()` removes everything it made.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from pylium import paths
from pylium.agent.client import AgentClient, AgentError
from pylium.store import open_store

AGENT_BINARY = Path(sys.executable).parent / "pylium-agent"


def netns_add(name: str) -> str:
    """Create a named netns with `lo` up; returns its path."""
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    return str(paths.NETNS_DIR / name)


def netns_del(name: str) -> None:
    """Delete a named netns if it exists."""
    if (paths.NETNS_DIR / name).exists():
        subprocess.run(["ip", "netns", "del", name], check=False)


def unique_name(prefix: str) -> str:
    """`prefix` plus a random suffix, so parallel runs never collide."""
    return f"{prefix}{secrets.token_hex(3)}"


class ScratchNode:
    """A node netns with its own store and agent. Use as a context manager."""

    def __init__(self, prefix: str, workdir: Path, pod_cidr: str, mtu: int | None = None) -> None:
        self.netns = unique_name(prefix)
        self.node = self.netns
        self.workdir = workdir
        self.pod_cidr = pod_cidr
        self.mtu = mtu
        self.store_url = f"sqlite://{workdir / 'store.db'}"
        self.socket = workdir / "run" / "agent.sock"
        self.state_dir = workdir / "run" / "state"
        self.log_path = workdir / "agent.log"
        self.agent = AgentClient(self.socket)
        self._process: subprocess.Popen[bytes] | None = None
        self._netns_made = False

    def __enter__(self) -> ScratchNode:
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            netns_add(self.netns)
            self._netns_made = True
            asyncio.run(self._write_cilium_node())
            self.start_agent()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def exec_prefix(self) -> list[str]:
        """The command prefix that runs a program inside the node netns."""
        return ["nsenter", f"--net={paths.NETNS_DIR / self.netns}", "--"]

    def start_agent(self, timeout: float = 30.0, env: dict[str, str] | None = None) -> None:
        """Start the agent (with `env` added to its environment) and wait for healthz."""
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        command = [str(AGENT_BINARY), "--node", self.node, "--store", self.store_url]
        command += ["--socket", str(self.socket), "--state-dir", str(self.state_dir)]
        if self.mtu is not None:
            command += ["--mtu", str(self.mtu)]
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.exec_prefix() + command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"pylium-agent exited: {self.log_tail()}")
            try:
                self.agent.healthz()
                return
            except AgentError:  # unreachable or not ready yet
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pylium-agent not ready: {self.log_tail()}") from None
                time.sleep(0.05)

    def stop_agent(self) -> None:
        """SIGTERM the agent and wait for it (SIGKILL after 10 s)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = 20) -> str:
        """The end of the agent's log, for error messages."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        """Stop the agent, delete the netns and the agent's BPF pins (idempotent)."""
        self.stop_agent()
        if self._netns_made:
            netns_del(self.netns)
            self._netns_made = False
        # the agent pins its maps and links per node; removing them frees them
        shutil.rmtree(paths.bpffs_node_dir(self.node), ignore_errors=True)

    async def _write_cilium_node(self) -> None:
        store = open_store(self.store_url)
        try:
            await store.create(
                {
                    "apiVersion": "cilium.io/v2",
                    "kind": "CiliumNode",
                    "metadata": {"name": self.node},
                    "spec": {"ipam": {"podCIDRs": [self.pod_cidr]}},
                }
            )
        finally:
            await store.close()
