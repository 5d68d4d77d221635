"""The daemons of a lab: per node the agent (which also runs the node routes in native routing)
and the lab kubelet, started inside the node's namespace with their logs in the node directory;
per lab the scheduler, the world server, the Hubble relay and (etcd stores) the store proxy, logs
in the lab directory. Also how to recognise each again by its argv."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from pylium import paths
from pylium.lab import netns, process
from pylium.lab.record import (
    CLUSTER_POOL,
    LB_POOL,
    POD_CIDR_MASK,
    SERVICE_CIDR,
    UPLINK,
    WORLD_IP,
    WORLD_SERVER_PORTS,
    LabRecord,
    NodeRecord,
    store_url,
    world_netns,
)

KUBELET_MODULE = "pylium.lab.kubelet"
RELAY_MODULE = "pylium.hubble.relay"
SCHEDULER_MODULE = "pylium.lab.scheduler"
STORE_PROXY_MODULE = "pylium.lab.storeproxy"
PODSERVER_MODULE = "pylium.lab.podserver"


def agent_argv(lab: LabRecord, node: NodeRecord) -> list[str]:
    """The agent's command line (run from the venv the running `pylium` belongs to)."""
    return [
        str(Path(sys.executable).parent / "pylium-agent"),
        "--node",
        node.name,
        "--store",
        lab.store,
        "--socket",
        node.agentSocket,
        "--state-dir",
        str(paths.agent_state_dir(node.name)),
        *_service_args(lab, node),
        "--mtu",
        str(lab.mtu),
        "--ipam",
        "cluster-pool",
        "--routing-mode",
        lab.routing,
        "--uplink",
        UPLINK,
        "--enable-bpf-masquerade",  # pods reach the world namespace as their node
        "--native-routing-cidr",
        CLUSTER_POOL,
        "--hubble-listen",
        node.hubble_address,
        "--metrics-listen",
        node.metrics_address,
    ]


def _service_args(lab: LabRecord, node: NodeRecord) -> list[str]:
    """Socket LB on the node's cgroup, or kube-proxy's rules in the node's namespace, and the
    eBPF service features switched on or off one by one."""
    switches = [
        f"--{flag}={'true' if on else 'false'}"
        for flag, on in (
            ("bpf-lb-sock", lab.bpfLbSock),
            ("enable-node-port", lab.enableNodePort),
            ("enable-external-ips", lab.enableExternalIps),
        )
        if on is not None
    ]
    if lab.kubeProxyReplacement:
        return ["--kube-proxy-replacement", "true", "--cgroup", node.cgroup, *switches]
    mode = ["--kube-proxy-replacement", "false", "--kube-proxy-mode", lab.kubeProxyMode]
    return [*mode, "--cgroup", node.cgroup, *switches] if lab.bpfLbSock else [*mode, *switches]


def _has_pair(argv: list[str], flag: str, value: str) -> bool:
    return any(a == flag and b == value for a, b in itertools.pairwise(argv))


def is_lab_daemon(lab: str, module: str) -> process.Match:
    """Matches the argv of a lab-wide daemon (`-m module --lab LAB`)."""
    return lambda argv: module in argv and _has_pair(argv, "--lab", lab)


def is_world_server(lab: str) -> process.Match:
    """Matches the argv of the lab's world server (it answers as `<lab>-world`)."""
    return lambda argv: PODSERVER_MODULE in argv and _has_pair(argv, "--name", f"{lab}-world")


def kubelet_argv(lab: LabRecord, node: NodeRecord) -> list[str]:
    """The lab kubelet's command line."""
    return [sys.executable, "-m", KUBELET_MODULE, "--lab", lab.name, "--node", node.name]


def is_agent_of(node: str) -> process.Match:
    """Matches the argv of a node's agent (its socket and state live in the node dir)."""
    prefix = f"{paths.node_dir(node)}/"

    def match(argv: list[str]) -> bool:
        return any(a.endswith("/pylium-agent") for a in argv) and any(
            a.startswith(prefix) for a in argv
        )

    return match


def is_kubelet_of(node: str) -> process.Match:
    """Matches the argv of a node's lab kubelet."""

    return lambda argv: KUBELET_MODULE in argv and _has_pair(argv, "--node", node)


def start_agent(lab: LabRecord, node: NodeRecord) -> int:
    """Start (or restart) the node's agent; records its pid and command in `node`."""
    node.agentCommand = agent_argv(lab, node)
    node.agentPid = process.start(
        netns.nsenter_argv(node.netns, node.agentCommand), node.dir / "agent.log"
    ).pid
    return node.agentPid


def start_kubelet(lab: LabRecord, node: NodeRecord) -> int:
    """Start (or restart) the node's lab kubelet; records its pid and command in `node`."""
    node.kubeletCommand = kubelet_argv(lab, node)
    node.kubeletPid = process.start(
        netns.nsenter_argv(node.netns, node.kubeletCommand), node.dir / "kubelet.log"
    ).pid
    return node.kubeletPid


def operator_argv(lab: LabRecord) -> list[str]:
    """The operator's command line: cluster-pool IPAM over the lab's pod range, ClusterIPs
    and LoadBalancer IPs out of the lab's ranges."""
    return [
        str(Path(sys.executable).parent / "pylium-operator"), "--store", lab.store,
        "--cluster-pool-ipv4-cidr", CLUSTER_POOL, "--cluster-pool-ipv4-mask-size",
        str(POD_CIDR_MASK), "--service-cluster-ip-range", SERVICE_CIDR, "--lb-pool", LB_POOL,
    ]  # fmt: skip


def is_operator_of(lab: str) -> process.Match:
    """Matches the argv of the lab's operator: its store is the lab's sqlite file or an etcd
    key root `/<lab>` (so `down --force` finds it without the record)."""

    def match(argv: list[str]) -> bool:
        store = next((b for a, b in itertools.pairwise(argv) if a == "--store"), "")
        ours = store == store_url(lab) or (
            store.startswith("etcd://") and store.endswith(f"/{lab}")
        )
        return ours and any(a.endswith("/pylium-operator") for a in argv)

    return match


def start_operator(lab: LabRecord) -> int:
    """Start the lab's operator in the root namespace (it needs only the store)."""
    lab.operatorPid = process.start(
        operator_argv(lab), paths.lab_dir(lab.name) / "operator.log"
    ).pid
    return lab.operatorPid


def start_lab_daemons(lab: LabRecord) -> None:
    """Start the scheduler and the world server; records their pids."""
    log_dir = paths.lab_dir(lab.name)
    lab.schedulerPid = process.start(
        [sys.executable, "-m", SCHEDULER_MODULE, "--lab", lab.name], log_dir / "scheduler.log"
    ).pid
    tcp, udp = WORLD_SERVER_PORTS
    server = [
        sys.executable, "-m", PODSERVER_MODULE, "--name", f"{lab.name}-world",
        "--tcp", str(tcp), "--udp", str(udp), "--address", WORLD_IP,
    ]  # fmt: skip
    lab.worldServerPid = process.start(
        netns.nsenter_argv(world_netns(lab.name), server), log_dir / "world.log"
    ).pid


def start_relay(lab: LabRecord) -> int:
    """Start the lab's Hubble relay in the root namespace (it dials every node's unix socket;
    it serves `paths.relay_socket`, and the UI on a loopback port it writes to the lab dir);
    records its pid."""
    lab.relayPid = process.start(
        [sys.executable, "-m", RELAY_MODULE, "--lab", lab.name, "--http-listen", "127.0.0.1:0"],
        paths.lab_dir(lab.name) / "relay.log",
    ).pid
    return lab.relayPid


def start_store_proxy(lab: LabRecord) -> int:
    """Start the etcd proxy for the node namespaces; records its pid."""
    lab.storeProxyPid = process.start(
        [sys.executable, "-m", STORE_PROXY_MODULE, "--lab", lab.name],
        paths.lab_dir(lab.name) / "storeproxy.log",
    ).pid
    return lab.storeProxyPid


def lab_daemons(lab: str) -> dict[str, process.Match]:
    """Name -> matcher of every lab-wide daemon, for status and down."""
    return {
        "operator": is_operator_of(lab),
        "scheduler": is_lab_daemon(lab, SCHEDULER_MODULE),
        "world server": is_world_server(lab),
        "store proxy": is_lab_daemon(lab, STORE_PROXY_MODULE),
        "hubble relay": is_lab_daemon(lab, RELAY_MODULE),
    }
