"""`pylium lab up`: build a lab on this machine out of network namespaces (DESIGN §5).

The record is written first, before anything is made, so `down` can find whatever a failed
`up` left; a failed `up` tears the lab down again itself. Nothing touches the root namespace's
devices or routes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from pylium.lab import cgroup, cluster, cniconf, daemons, down, netns, process, record
from pylium.lab.health import agent_health
from pylium.lab.record import LabRecord, NodeRecord

MAX_NODES = 1
"""Nodes a lab may have until the underlay between nodes exists."""

AGENT_READY_TIMEOUT = 60.0


class LabError(Exception):
    """The lab could not be made (the message says why and what to do)."""


def up(
    name: str,
    nodes: int = 1,
    mtu: int = record.DEFAULT_MTU,
    progress: Callable[[str], None] = print,
) -> LabRecord:
    """Make the lab and return its record once every agent is healthy.

    Raises:
        LabError: the lab exists, the request is unsupported, or a step failed (then the lab
            is torn down again).
    """
    if nodes < 1 or nodes > MAX_NODES:
        raise LabError(f"--nodes {nodes}: this version runs labs of {MAX_NODES} node only")
    if record.load(name) is not None:
        raise LabError(
            f"lab {name!r} exists already: remove it first with `pylium lab down --name {name}`"
        )
    if netns.matching(record.netns_pattern(name)):
        raise LabError(
            f"leftovers of an earlier lab {name!r} remain: remove them with "
            f"`pylium lab down --name {name} --force`"
        )
    lab = LabRecord.new(name, nodes, mtu)
    record.save(lab)
    try:
        progress("store: namespaces, nodes and pod CIDRs")
        asyncio.run(cluster.seed(lab))
        for node in lab.nodes:
            _make_node(lab, node, progress)
    except BaseException as e:
        progress(f"lab up failed ({e}); removing what was made")
        down.down(name, force=True, progress=progress)
        if isinstance(e, Exception) and not isinstance(e, LabError):
            raise LabError(str(e)) from e
        raise
    return lab


def _make_node(lab: LabRecord, node: NodeRecord, progress: Callable[[str], None]) -> None:
    progress(f"{node.name}: namespace {node.netns}, cgroup, CNI config")
    netns.create(node.netns)
    cgroup.create(Path(node.cgroup))
    node.dir.mkdir(parents=True, exist_ok=True)
    cniconf.install(node, lab.mtu)
    progress(f"{node.name}: starting the agent")
    daemons.start_agent(lab, node)
    record.save(lab)
    wait_agent(node, progress)
    progress(f"{node.name}: starting the lab kubelet")
    daemons.start_kubelet(lab, node)
    record.save(lab)


def wait_agent(
    node: NodeRecord,
    progress: Callable[[str], None] = print,
    timeout: float = AGENT_READY_TIMEOUT,
) -> None:
    """Wait until the node's agent answers healthz; fail fast, with its log, if it exits."""
    deadline = time.monotonic() + timeout
    progress(f"{node.name}: waiting for the agent to answer /v1/healthz")
    while True:
        health = agent_health(node.agentSocket)
        if health == "ok":
            progress(f"{node.name}: agent healthy")
            return
        if not process.alive(node.agentPid):
            raise LabError(f"{node.name}: the agent exited:\n{_tail(node.dir / 'agent.log')}")
        if time.monotonic() > deadline:
            raise LabError(
                f"{node.name}: agent not healthy after {timeout:.0f}s ({health}):\n"
                f"{_tail(node.dir / 'agent.log')}"
            )
        time.sleep(0.1)


def restart_agent(lab: LabRecord, node: NodeRecord, progress: Callable[[str], None] = print) -> int:
    """Stop the node's agent if it runs, start it again, wait until healthy; returns its pid.
    Pods keep their addresses: the agent reads its state back."""
    process.stop(node.agentPid, daemons.is_agent_of(node.name))
    pid = daemons.start_agent(lab, node)
    record.save(lab)
    wait_agent(node, progress)
    return pid


def restart_kubelet(lab: LabRecord, node: NodeRecord) -> int:
    """Stop the node's lab kubelet if it runs (it leaves pods alone) and start it again; it
    adopts the running pods. Returns its pid."""
    process.stop(node.kubeletPid, daemons.is_kubelet_of(node.name))
    pid = daemons.start_kubelet(lab, node)
    record.save(lab)
    return pid


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
