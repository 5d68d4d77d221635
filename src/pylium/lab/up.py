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

from pylium import paths
from pylium.agent.lbfeatures import lb_features
from pylium.lab import (
    cgroup,
    cluster,
    cniconf,
    daemons,
    down,
    netns,
    process,
    record,
    storeproxy,
    underlay,
)
from pylium.lab.health import agent_health
from pylium.lab.record import KubeProxyMode, LabRecord, NodeRecord, Routing

LBSwitches = tuple[bool | None, bool | None, bool | None]
"""Socket LB, NodePort, externalIPs on or off in every agent (None: the agent's default)."""

MAX_NODES = 20
"""Nodes a lab may have: the underlay is one /24, and each node costs ~100 MB of daemons."""

AGENT_READY_TIMEOUT = 60.0
PROXY_READY_TIMEOUT = 10.0
POD_CIDR_TIMEOUT = 30.0


class LabError(Exception):
    """The lab could not be made (the message says why and what to do)."""


def up(
    name: str,
    nodes: int = 1,
    mtu: int = record.DEFAULT_MTU,
    progress: Callable[[str], None] = print,
    routing: Routing = "native",
    store: str = "sqlite",
    kube_proxy_mode: KubeProxyMode | None = None,
    lb_switches: LBSwitches = (None, None, None),
) -> LabRecord:
    """Make the lab and return its record once every agent is healthy.

    Args:
        mtu: the underlay (uplink) MTU; pods get it less the tunnel overhead in tunnel mode.
        routing: `native` (routes to each node's pod CIDR through the underlay) or `tunnel`.
        kube_proxy_mode: None: Services in eBPF (kube-proxy replacement); `iptables` or
            `nftables`: the agents program kube-proxy's rules in their node's namespace.
        lb_switches: every agent's `--bpf-lb-sock`, `--enable-node-port` and
            `--enable-external-ips` (None: the agent's default).
        store: `sqlite` (a file in the lab dir) or `etcd://127.0.0.1:PORT` (keys under
            `/<lab>`).

    Raises:
        LabError: the lab exists, the request is unsupported, or a step failed (then the lab
            is torn down again).
    """
    if nodes < 1 or nodes > MAX_NODES:
        raise LabError(f"--nodes {nodes}: a lab has 1 to {MAX_NODES} nodes")
    if store != "sqlite":
        try:
            storeproxy.etcd_endpoint(store)
        except ValueError as e:
            raise LabError(f"--store {e}") from None
        if not store.startswith("etcd://"):
            raise LabError(f"--store {store}: expected sqlite or etcd://HOST:PORT")
    if record.load(name) is not None:
        raise LabError(
            f"lab {name!r} exists already: remove it first with `pylium lab down --name {name}`"
        )
    if netns.matching(record.netns_pattern(name)):
        raise LabError(
            f"leftovers of an earlier lab {name!r} remain: remove them with "
            f"`pylium lab down --name {name} --force`"
        )
    try:  # every agent would refuse them once the lab is made (each node has its cgroup)
        lb_features(kube_proxy_mode is None, *lb_switches, cgroup=paths.CGROUP_ROOT)
    except ValueError as e:
        raise LabError(str(e)) from None
    lab = LabRecord.new(name, nodes, mtu, routing, store)
    if kube_proxy_mode is not None:
        lab.kubeProxyReplacement, lab.kubeProxyMode = False, kube_proxy_mode
    lab.bpfLbSock, lab.enableNodePort, lab.enableExternalIps = lb_switches
    record.save(lab)
    try:
        progress("store: namespaces, nodes and their addresses")
        asyncio.run(cluster.seed(lab))
        progress(f"operator: pod CIDRs out of {record.CLUSTER_POOL}")
        daemons.start_operator(lab)
        record.save(lab)
        _wait_pod_cidrs(lab)
        record.save(lab)
        progress(f"underlay {record.UNDERLAY_CIDR} and world {record.WORLD_CIDR}")
        underlay.create_underlay(lab)
        for i, node in enumerate(lab.nodes, start=1):
            _make_node(lab, node, i, progress)
        daemons.start_lab_daemons(lab)
        if storeproxy.etcd_endpoint(lab.store) is not None:
            progress("etcd proxy into the node namespaces")
            daemons.start_store_proxy(lab)
            record.save(lab)
            _wait_proxy(lab)
        record.save(lab)
        for node in lab.nodes:
            progress(f"{node.name}: starting the agent")
            daemons.start_agent(lab, node)
            record.save(lab)
        for node in lab.nodes:
            wait_agent(node, progress)
        progress(f"Hubble relay on {paths.relay_socket(name)}")
        daemons.start_relay(lab)
        record.save(lab)
        for node in lab.nodes:
            progress(f"{node.name}: starting the lab kubelet")
            daemons.start_kubelet(lab, node)
            record.save(lab)
    except BaseException as e:
        progress(f"lab up failed ({e}); removing what was made")
        down.down(name, force=True, progress=progress)
        if isinstance(e, Exception) and not isinstance(e, LabError):
            raise LabError(str(e)) from e
        raise
    return lab


def _make_node(
    lab: LabRecord, node: NodeRecord, index: int, progress: Callable[[str], None]
) -> None:
    progress(f"{node.name}: namespace {node.netns}, uplink {node.underlayIP}, cgroup, CNI")
    netns.create(node.netns)
    underlay.plug_node(lab, node, index)
    cgroup.create(Path(node.cgroup))
    node.dir.mkdir(parents=True, exist_ok=True)
    cniconf.install(node, lab.mtu)


def _wait_pod_cidrs(lab: LabRecord) -> None:
    """Wait until the operator gave every node a pod CIDR; record and mirror them."""
    running = daemons.is_operator_of(lab.name)
    cidrs = asyncio.run(
        cluster.pod_cidrs(lab, POD_CIDR_TIMEOUT, lambda: process.alive(lab.operatorPid, running))
    )
    if cidrs is None:
        log = paths.lab_dir(lab.name) / "operator.log"
        raise LabError(f"the operator gave no pod CIDRs:\n{_tail(log)}")
    for node in lab.nodes:
        node.podCIDR = cidrs[node.name]
    asyncio.run(cluster.mirror_pod_cidrs(lab))


def _wait_proxy(lab: LabRecord) -> None:
    """Wait until every node namespace reaches etcd through the proxy."""
    target = storeproxy.etcd_endpoint(lab.store)
    assert target is not None
    deadline = time.monotonic() + PROXY_READY_TIMEOUT
    for node in lab.nodes:
        while not netns.can_connect(node.netns, *target):
            if not process.alive(lab.storeProxyPid) or time.monotonic() > deadline:
                log = paths.lab_dir(lab.name) / "storeproxy.log"
                raise LabError(f"{node.name}: etcd not reachable through the proxy:\n{_tail(log)}")
            time.sleep(0.05)


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
    _stop_for_restart("agent", node.agentPid, daemons.is_agent_of(node.name))
    pid = daemons.start_agent(lab, node)
    record.save(lab)
    wait_agent(node, progress)
    return pid


def restart_kubelet(lab: LabRecord, node: NodeRecord) -> int:
    """Stop the node's lab kubelet if it runs (it leaves pods alone) and start it again; it
    adopts the running pods. Returns its pid."""
    _stop_for_restart("kubelet", node.kubeletPid, daemons.is_kubelet_of(node.name))
    pid = daemons.start_kubelet(lab, node)
    record.save(lab)
    return pid


def _stop_for_restart(what: str, pid: int | None, match: process.Match) -> None:
    """Stop a daemon before starting its successor; two of them would fight over the node."""
    if left := process.stop(pid, match):
        raise LabError(f"the {what} (pid {pid}) outlived SIGKILL (state {left}); not restarting")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
