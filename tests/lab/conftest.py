"""A real lab for the end-to-end tests: made once per module, always torn down, and checked
to leave nothing behind (namespaces, node dirs, cgroups, processes, pins, records)."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pylium import paths
from pylium.lab import daemons, netns, process, record
from pylium.store import NotFound, open_store
from tests.support import wait_for

PYLIUM = str(Path(sys.executable).parent / "pylium")
MAX_TEST_NODES = 3
"""The most nodes a test lab has (leftover checks look for daemons of that many)."""


def pylium(
    *args: str, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the `pylium` command as a user would."""
    proc = subprocess.run([PYLIUM, *args], capture_output=True, text=True, input=input, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"pylium {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def unique_lab() -> str:
    """A lab name no other engineer's tests use (prefix `t`)."""
    return f"t{secrets.token_hex(3)}"


def leftovers(lab: str) -> dict[str, Any]:
    """Everything of `lab` still on the machine (empty when clean)."""
    node = record.node_pattern(lab)
    found: dict[str, Any] = {
        "netns": netns.matching(record.netns_pattern(lab)),
        "node dirs": [n for n in os.listdir(paths.RUN_ROOT) if node.fullmatch(n)]
        if paths.RUN_ROOT.exists()
        else [],
        "lab dir": paths.lab_dir(lab).exists(),
        "cgroup": (paths.CGROUP_ROOT / lab).exists(),
        "empty cgroup parent": _without_children(paths.CGROUP_ROOT),
        "empty bpffs parent": _without_children(paths.BPFFS_ROOT),
        "pins": [n for n in os.listdir(paths.BPFFS_ROOT) if node.fullmatch(n)]
        if paths.BPFFS_ROOT.exists()
        else [],
        "processes": [
            pid
            for i in range(1, MAX_TEST_NODES + 1)
            for match in (daemons.is_agent_of, daemons.is_kubelet_of)
            for pid in process.find(match(record.node_name(lab, i)))
        ]
        + [pid for match in daemons.lab_daemons(lab).values() for pid in process.find(match)],
    }
    return {k: v for k, v in found.items() if v}


def _without_children(root: Path) -> bool:
    """`root` exists but holds no directory: the last lab's down should have removed it (a
    cgroup directory always holds its control files)."""
    try:
        with os.scandir(root) as entries:
            return not any(entry.is_dir() for entry in entries)
    except FileNotFoundError:
        return False


def apply(lab: str, *objects: dict[str, Any]) -> None:
    """`pylium apply -f -` of the objects."""
    pylium("--lab", lab, "apply", "-f", "-", input=yaml.safe_dump_all(objects))


def store_get(lab: str, kind: str, name: str, namespace: str = "") -> dict[str, Any] | None:
    """An object straight from the lab's store (None if absent): cheaper than a CLI call in
    a polling loop."""
    rec = record.load(lab)
    assert rec is not None

    async def get() -> dict[str, Any] | None:
        store = open_store(rec.store)
        try:
            return await store.get(kind, namespace, name)
        except NotFound:
            return None
        finally:
            await store.close()

    return asyncio.run(get())


def running_pod(lab: str, name: str, namespace: str = "default") -> dict[str, Any]:
    """Wait until the pod runs, Ready, with an IP; returns it. (Running alone is not enough:
    the kubelet may write the phase before its containers count as ready.)"""

    def check() -> dict[str, Any] | None:
        pod = store_get(lab, "Pod", name, namespace)
        status = (pod or {}).get("status") or {}
        ready = {"type": "Ready", "status": "True"} in (status.get("conditions") or [])
        return pod if status.get("phase") == "Running" and status.get("podIP") and ready else None

    return wait_for(check, timeout=30, interval=0.1)


def answering(lab: str, src: str, dest: str, port: int = 80, protocol: str = "tcp") -> str:
    """Probe from pod `src` until `dest` answers (a Running pod's server may not listen yet,
    and a new node's routes may still be converging); returns the answer. Under a fully loaded
    suite an etcd lab once needed more than 10 s, hence 30."""
    args = ["--lab", lab, "probe", src, f"{dest}:{port}", "--protocol", protocol]
    return wait_for(lambda: pylium(*args, check=False).stdout.strip(), timeout=30, interval=0.1)


def server_pod(name: str, namespace: str = "default") -> dict[str, Any]:
    """A pod served by the built-in server on 80/TCP and 53/UDP."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "containers": [
                {
                    "name": "server",
                    "image": "pylium/podserver",
                    "ports": [
                        {"containerPort": 80},
                        {"containerPort": 53, "protocol": "UDP"},
                    ],
                }
            ]
        },
    }


def pinned_pod(
    lab: str, name: str, node: int, labels: dict[str, str], namespace: str = "default"
) -> dict[str, Any]:
    """`server_pod` with `labels`, pinned to the lab's node number `node`."""
    obj = server_pod(name, namespace)
    obj["metadata"]["labels"] = labels
    obj["spec"]["nodeName"] = record.node_name(lab, node)
    return obj


def lab_up(name: str, *args: str) -> Iterator[str]:
    """For a fixture to `yield from`: `pylium lab up --name NAME ARGS...`, the name, then the
    lab removed (also after failure) and checked to leave nothing behind."""
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    try:
        pylium("lab", "up", "--name", name, *args)
        yield name
    finally:
        pylium("lab", "down", "--name", name, "--force", check=False)
        assert leftovers(name) == {}


@pytest.fixture(scope="module")
def lab() -> Iterator[str]:
    """A one-node lab, removed at the end; the test fails if anything of it remains."""
    yield from lab_up(unique_lab())
