"""`pylium lab down`: remove everything a lab made, from its record and by name.

Order matters: the scheduler and the kubelets first (so nothing new starts), then the agents,
the world server, the Hubble relay and the etcd proxy, then every pod process (killed
through the node cgroups), then the namespaces (nodes, pods, underlay, world: their devices go
with them), then the lab's keys in etcd, then directories, pins and cgroups, and the shared `pylium`
cgroup and bpffs parents when no other lab (or test) uses them. Pods get no CNI
DEL: the node namespace and the agent's state go as a whole.

Without a record (a crash during `up`, or a deleted lab dir) `force` finds the leftovers by
name: namespaces `pyl-<lab>-node<i>` / `pyl-<lab>-p-<hash>` / `-underlay` / `-world`, node
directories, cgroups, pins, and daemons by their argv (the etcd keys need the record's URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from pylium import paths
from pylium.lab import cgroup, daemons, etcdkeys, netns, process, record


class LeftoversWithoutRecord(Exception):
    """The lab has no record but things of it remain: only `force` removes them."""


def _leftover_nodes(lab: str) -> set[str]:
    """Node names of the lab found on the machine by name."""
    pattern = record.node_pattern(lab)
    names: set[str] = set()
    for ns in netns.matching(record.netns_pattern(lab)):
        node = ns.removeprefix(paths.LAB_NETNS_PREFIX)
        if pattern.fullmatch(node):
            names.add(node)
    for root in (paths.RUN_ROOT, paths.BPFFS_ROOT, paths.CGROUP_ROOT / lab):
        with contextlib.suppress(FileNotFoundError):
            names.update(n for n in os.listdir(root) if pattern.fullmatch(n))
    return names


def down(lab: str, force: bool = False, progress: Callable[[str], None] = print) -> bool:
    """Remove the lab; returns False when there was nothing to remove.

    Raises:
        LeftoversWithoutRecord: no record, leftovers exist and `force` is off.
    """
    rec = record.load(lab)
    recorded = {n.name: n for n in rec.nodes} if rec else {}
    leftovers = _leftover_nodes(lab)
    namespaces = netns.matching(record.netns_pattern(lab))
    if rec is None:
        if not (leftovers or namespaces or paths.lab_dir(lab).exists()):
            return False
        if not force:
            raise LeftoversWithoutRecord(
                f"lab {lab!r} has no record, but leftovers remain "
                f"(nodes {sorted(leftovers)}, {len(namespaces)} namespaces): "
                f"run `pylium lab down --name {lab} --force`"
            )
    nodes = set(recorded) | leftovers
    lab_daemons = daemons.lab_daemons(lab)
    pids = rec.daemon_pids() if rec else {}
    _stop("scheduler", pids.get("scheduler"), lab_daemons.pop("scheduler"), progress)
    for node in sorted(nodes):
        known = recorded.get(node)
        for pid, match in (
            (known.kubeletPid if known else None, daemons.is_kubelet_of(node)),
            (known.agentPid if known else None, daemons.is_agent_of(node)),
        ):
            _stop(node, pid, match, progress)
    for what, match in lab_daemons.items():  # the operator, world server, relay, proxy
        _stop(what, pids.get(what), match, progress)
    for node in sorted(nodes):
        progress(f"{node}: killing pod processes")
        cgroup.remove(record.cgroup_dir(lab, node))
    for ns in netns.matching(record.netns_pattern(lab)):
        progress(f"deleting namespace {ns}")
        netns.delete(ns)
    if rec is not None and rec.store.startswith("etcd://"):
        progress(f"clearing the lab's keys in {rec.store}")
        try:
            asyncio.run(etcdkeys.clear(rec.store))
        except Exception as e:  # etcd gone: the rest of the lab must still go
            progress(f"could not clear the lab's keys ({e}); they stay in etcd")
    for node in sorted(nodes):
        for path in (paths.node_dir(node), paths.bpffs_node_dir(node)):
            _rmtree(path)
    _rmtree(paths.lab_dir(lab))
    # the shared parents go with the last lab (rmdir fails while another lab has a subtree)
    for path in (paths.CGROUP_ROOT / lab, paths.CGROUP_ROOT, paths.BPFFS_ROOT):
        with contextlib.suppress(OSError):
            path.rmdir()
    return True


def _stop(
    what: str, pid: int | None, match: process.Match, progress: Callable[[str], None]
) -> None:
    """Stop the recorded pid and any other process `match` recognises."""
    for p in {pid, *process.find(match)} - {None}:
        progress(f"{what}: stopping pid {p}")
        if left := process.stop(p, match):
            progress(f"{what}: pid {p} outlived SIGKILL (state {left}); going on without it")


def _rmtree(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
