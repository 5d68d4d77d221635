"""`pylium-agent`: run one node's agent until SIGTERM or SIGINT.

    pylium-agent --node NAME --store URL [--socket PATH] [--state-dir DIR] [--bpf-dir DIR]
                 [--mtu N] [--ipam cluster-pool|kubernetes|crd]
                 [--hubble-listen HOST:PORT] [--metrics-listen HOST:PORT]
                 [--kube-proxy-replacement true|false] [--cgroup PATH]
                 [--bpf-lb-sock true|false]
                 [--enable-node-port true|false] [--enable-external-ips true|false]
                 [--kube-proxy-mode iptables|nftables]
                 [--bpf-lb-algorithm random|maglev] [--bpf-lb-maglev-table-size M]
                 [--routing-mode native|tunnel] [--uplink DEVICE]
                 [--enable-bpf-masquerade --native-routing-cidr CIDR]

Logs go to stderr. The agent expects to run inside its node's network namespace (the lab starts
it with `nsenter --net=...`): it enables forwarding there and attaches its programs to the
pods' host-side veths there. `/sys/fs/bpf` must be a mounted bpffs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from pylium import paths
from pylium.agent.cells import Agent, AgentParams
from pylium.agent.lbfeatures import lb_features
from pylium.cli.switch import add_switch
from pylium.datapath.lbconfig import LBConfig
from pylium.ipam import IpamMode
from pylium.loadbalancer.kubeproxy.proxier import Mode as KubeProxyMode
from pylium.loadbalancer.maglev import DEFAULT_TABLE_SIZE, TABLE_SIZES
from pylium.loadbalancer.model import Algorithm
from pylium.policy import Enforcement, PolicyConfig
from pylium.routing import RoutingMode

log = logging.getLogger("pylium.agent")

CRASH_ENV = "PYLIUM_AGENT_CRASH_AT"
"""Test-only: name an ADD step ("state-written", "ip-allocated", "veth-created",
"pod-configured", "datapath-configured", "host-configured", "ready") and the agent exits
abruptly right after it, as a crash would. The crash-recovery tests use it."""

CRASH_EXIT_CODE = 70


def _crash_hook(step_name: str) -> Callable[[str], None]:
    def on_step(step: str) -> None:
        if step == step_name:
            log.error("%s=%s: exiting abruptly", CRASH_ENV, step)
            os._exit(CRASH_EXIT_CODE)

    return on_step


def parse_args(argv: list[str] | None) -> AgentParams:
    """Command line -> AgentParams (node-scoped defaults from paths.py)."""
    parser = argparse.ArgumentParser(prog="pylium-agent", description=__doc__.splitlines()[0])
    parser.add_argument("--node", required=True, help="this node's name (its CiliumNode)")
    parser.add_argument("--store", required=True, help="cluster store URL (sqlite:///abs/path)")
    parser.add_argument("--socket", type=Path, help="API socket (default: per node)")
    parser.add_argument("--state-dir", type=Path, help="endpoint and IPAM state (per node)")
    parser.add_argument("--bpf-dir", type=Path, help="bpffs pin directory (default: per node)")
    parser.add_argument("--mtu", type=int, default=1500, help="pod interface MTU")
    parser.add_argument(
        "--ipam",
        choices=[m.value for m in IpamMode],
        default=IpamMode.CLUSTER_POOL.value,
        help="the cluster's IPAM mode: pod CIDR from CiliumNode (cluster-pool), from Node"
        " (kubernetes), or the address list in CiliumNode.spec.ipam.pool (crd)",
    )
    parser.add_argument(
        "--hubble-listen",
        metavar="HOST:PORT",
        help="serve the Observer gRPC API on TCP too (Hubble's :4244); always on"
        " <socket dir>/hubble.sock",
    )
    add_switch(
        parser,
        "--enable-hubble",
        default=True,
        help="false: the tc programs write no trace events (no forwarded flows; drops and"
        " socket-LB translations still report), without the cost of flow export (default true)",
    )
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus /metrics there (Cilium's :9962); default: not served",
    )
    parser.add_argument(
        "--routing-mode",
        choices=[m.value for m in RoutingMode],
        default=RoutingMode.NATIVE.value,
        help="native: route every other node's pod CIDR via its address; tunnel: VXLAN",
    )
    parser.add_argument(
        "--uplink",
        default="eth0",
        metavar="DEVICE",
        help="the node's main device, where native routes leave (default eth0)",
    )
    parser.add_argument(
        "--enable-bpf-masquerade",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="masquerade pod traffic leaving the cluster to the uplink's address in BPF",
    )
    parser.add_argument(
        "--native-routing-cidr",
        metavar="CIDR",
        help="destinations reached without masquerading (Cilium's ipv4-native-routing-cidr)",
    )
    for flag, what in (
        ("--enable-node-port", "NodePorts and LoadBalancer IPs"),
        ("--enable-external-ips", "externalIPs"),
    ):
        add_switch(
            parser,
            flag,
            help=f"{what} reachable from outside through the per-packet path on --uplink"
            " (default: as --kube-proxy-replacement; beside kube-proxy's rules without it)",
        )
    add_switch(
        parser,
        "--bpf-lb-sock",
        help="socket LB on --cgroup: pods' connect() to a service goes to a backend (default:"
        " as --kube-proxy-replacement; beside kube-proxy's rules without it)",
    )
    add_switch(
        parser,
        "--kube-proxy-replacement",
        default=False,
        help="true: Services in eBPF (socket LB on --cgroup); false (default): kube-proxy"
        " mode with --kube-proxy-mode, else the agent leaves Services alone",
    )
    parser.add_argument(
        "--kube-proxy-mode",
        choices=[m.value for m in KubeProxyMode],
        help="with --kube-proxy-replacement false: program the node's Services as kube-proxy's"
        " iptables or nftables rules in the agent's network namespace",
    )
    parser.add_argument(
        "--cgroup",
        type=Path,
        help="cgroup v2 directory socket LB attaches to: the lab's node cgroup (on a real"
        " node the cgroup v2 root); required with socket LB (--bpf-lb-sock)",
    )
    parser.add_argument(
        "--bpf-lb-algorithm",
        choices=[a.value for a in Algorithm],
        default=Algorithm.RANDOM.value,
        help="backend selection of services without the lb-algorithm annotation (maglev:"
        " per-packet paths only; socket LB always picks at random, as Cilium's)",
    )
    parser.add_argument(
        "--bpf-lb-maglev-table-size",
        type=int,
        choices=TABLE_SIZES,
        default=DEFAULT_TABLE_SIZE,
        metavar="M",
        help=f"Maglev table size, a prime of {TABLE_SIZES} (default {DEFAULT_TABLE_SIZE})",
    )
    parser.add_argument(
        "--policy-enforcement",
        choices=[m.value for m in Enforcement],
        default=Enforcement.DEFAULT.value,
        help="network policy: default (a direction is enforced once a policy selects the"
        " endpoint for it), always (default deny without policy), never",
    )
    parser.add_argument(
        "--policy-audit-mode",
        action="store_true",
        help="report policy drops as AUDIT verdicts and let the packets pass",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    kube_proxy_replacement: bool = args.kube_proxy_replacement
    sock_lb, node_port, external_ips = (
        args.bpf_lb_sock,
        args.enable_node_port,
        args.enable_external_ips,
    )
    try:
        lb_features(kube_proxy_replacement, sock_lb, node_port, external_ips, args.cgroup)
    except ValueError as e:
        parser.error(str(e))
    if kube_proxy_replacement and args.kube_proxy_mode is not None:
        parser.error("--kube-proxy-mode needs --kube-proxy-replacement false")
    if args.enable_bpf_masquerade and args.native_routing_cidr is None:
        parser.error("--enable-bpf-masquerade needs --native-routing-cidr")
    crash_at = os.environ.get(CRASH_ENV)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return AgentParams(
        node=args.node,
        store_url=args.store,
        socket=args.socket or paths.agent_socket(args.node),
        state_dir=args.state_dir or paths.agent_state_dir(args.node),
        bpf_dir=args.bpf_dir or paths.bpffs_node_dir(args.node),
        mtu=args.mtu,
        ipam=IpamMode(args.ipam),
        hubble_listen=args.hubble_listen,
        hubble=args.enable_hubble,
        metrics_listen=args.metrics_listen,
        routing_mode=RoutingMode(args.routing_mode),
        uplink=args.uplink,
        masquerade=args.enable_bpf_masquerade,
        native_routing_cidr=args.native_routing_cidr,
        kube_proxy_replacement=kube_proxy_replacement,
        sock_lb=sock_lb,
        node_port=node_port,
        external_ips=external_ips,
        cgroup=args.cgroup,
        kube_proxy_mode=KubeProxyMode(args.kube_proxy_mode) if args.kube_proxy_mode else None,
        lb=LBConfig(Algorithm(args.bpf_lb_algorithm), args.bpf_lb_maglev_table_size),
        policy=PolicyConfig(Enforcement(args.policy_enforcement), args.policy_audit_mode),
        on_step=_crash_hook(crash_at) if crash_at else None,
    )


async def run(params: AgentParams) -> None:
    """Start the agent, serve until a stop signal, stop it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    agent = Agent(params)
    try:
        starting = asyncio.create_task(agent.start())
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting in done:
            starting.result()  # raise a start failure
            await stopping
        else:
            starting.cancel()  # stopped while still waiting for the pod CIDR
            await asyncio.gather(starting, return_exceptions=True)
    finally:
        await agent.stop()
    log.info("agent of node %s stopped", params.node)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    params = parse_args(argv)
    try:
        asyncio.run(run(params))
    except Exception:
        log.exception("agent of node %s failed", params.node)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
