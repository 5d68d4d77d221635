"""Fixtures for the agent datapath tests: a node netns running the real agent (via nsenter,
as the lab does) over a temporary sqlite store, its BPF pins in a private bpffs directory, and
pod namespaces. Everything is removed after the test, also when it fails."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pylium.agent.client import AgentClient, AgentError
from pylium.paths import BPFFS_ROOT
from pylium.store import open_store
from tests.support import wait_for

PREFIX = "pyl-ti-"
CIDR = "10.244.7.0/24"


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def ip_json(*args: str) -> list[dict]:
    """`ip -j ...` parsed."""
    return json.loads(_ip("-j", *args) or "[]")


def add_netns() -> str:
    name = PREFIX + secrets.token_hex(4)
    _ip("netns", "add", name)
    return name


def del_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


class Node:
    """One node netns with its agent process."""

    def __init__(self, root: Path, netns: str, bpf_dir: Path) -> None:
        self.root = root
        self.netns = netns
        self.bpf_dir = bpf_dir
        self.name = "n1"
        self.socket = root / "agent.sock"
        self.state_dir = root / "state"
        self.store_url = f"sqlite://{root}/store.db"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = AgentClient(self.socket, timeout=30)
        self._log = root / "agent.log"

    def start(self, crash_at: str | None = None) -> None:
        env = dict(os.environ)
        env.pop("PYLIUM_AGENT_CRASH_AT", None)
        if crash_at:
            env["PYLIUM_AGENT_CRASH_AT"] = crash_at
        with self._log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    "nsenter",
                    f"--net=/var/run/netns/{self.netns}",
                    "--",
                    sys.executable,
                    "-m",
                    "pylium.agent.main",
                    "--node",
                    self.name,
                    "--store",
                    self.store_url,
                    "--socket",
                    str(self.socket),
                    "--state-dir",
                    str(self.state_dir),
                    "--bpf-dir",
                    str(self.bpf_dir),
                    "--log-level",
                    "WARNING",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
            )
        wait_for(self._healthy, timeout=20)

    def _healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log()
        try:
            return self.client.healthz()["status"] == "ok"
        except AgentError:
            return False

    def kill(self) -> int:
        """SIGKILL the agent, as a crash would; returns its exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        return self.wait()

    def stop(self) -> int:
        """SIGTERM, the clean stop."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.wait()

    def wait(self) -> int:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        return code

    def log(self) -> str:
        return self._log.read_text() if self._log.exists() else ""

    def links(self) -> list[str]:
        return sorted(link["ifname"] for link in ip_json("-n", self.netns, "link"))

    def routes(self) -> list[dict]:
        return ip_json("-n", self.netns, "-4", "route")

    def allocations(self) -> dict[str, dict]:
        return dict(json.loads((self.state_dir / "ipam.json").read_text())["allocations"])

    def state_files(self) -> list[str]:
        return sorted(p.name for p in self.state_dir.rglob("*") if p.is_file())


async def _make_ciliumnode(url: str, name: str) -> None:
    store = open_store(url)
    try:
        await store.create(
            {
                "apiVersion": "cilium.io/v2",
                "kind": "CiliumNode",
                "metadata": {"name": name},
                "spec": {"ipam": {"podCIDRs": [CIDR]}},
            }
        )
    finally:
        await store.close()


@pytest.fixture
def node() -> Iterator[Node]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    root = Path(tempfile.mkdtemp(prefix=PREFIX))
    netns = add_netns()
    n = Node(root, netns, BPFFS_ROOT / f"ti-{secrets.token_hex(4)}")
    try:
        asyncio.run(_make_ciliumnode(n.store_url, n.name))
        n.start()
        yield n
    finally:
        if n.proc is not None:
            n.stop()
        del_netns(netns)
        # what `lab down` does per node: the last references go, links and maps are freed
        shutil.rmtree(n.bpf_dir, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pods() -> Iterator[list[str]]:
    """A list to which `new_pod` appends; every namespace in it is deleted afterwards."""
    made: list[str] = []
    try:
        yield made
    finally:
        for name in made:
            del_netns(name)


def new_pod(pods: list[str]) -> str:
    """A fresh pod namespace; returns its path."""
    name = add_netns()
    pods.append(name)
    return f"/var/run/netns/{name}"
