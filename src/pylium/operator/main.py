"""`pylium-operator`: run the cluster's operator until SIGTERM or SIGINT.

    pylium-operator --store URL [--ipam cluster-pool|kubernetes|crd]
        [--cluster-pool-ipv4-cidr CIDR ...] [--cluster-pool-ipv4-mask-size N]
        [--identity-gc-grace S] [--identity-gc-interval S] [--resync-interval S]
        [--service-cluster-ip-range CIDR] [--service-node-port-range LOW-HIGH]
        [--lb-pool CIDR ...]

Logs go to stderr. One operator per cluster is the plan, but two running at once never hand out
a pod CIDR twice (see `operator/ledger.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from pylium.ipam.sources import IpamMode
from pylium.loadbalancer.allocation import DEFAULT_NODE_PORTS, DEFAULT_SERVICE_CIDR
from pylium.operator.cells import DEFAULT_MASK_SIZE, DEFAULT_POOL, Operator, OperatorParams

log = logging.getLogger("pylium.operator")


def parse_args(argv: list[str] | None) -> OperatorParams:
    """Command line -> OperatorParams."""
    parser = argparse.ArgumentParser(prog="pylium-operator", description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="cluster store URL (sqlite:///abs/path)")
    parser.add_argument(
        "--ipam",
        choices=[m.value for m in IpamMode],
        default=IpamMode.CLUSTER_POOL.value,
        help="IPAM mode of the cluster (default cluster-pool)",
    )
    parser.add_argument(
        "--cluster-pool-ipv4-cidr",
        action="append",
        metavar="CIDR",
        help=f"a cluster pool CIDR; repeat for several (default {DEFAULT_POOL[0]})",
    )
    parser.add_argument(
        "--cluster-pool-ipv4-mask-size",
        type=int,
        default=DEFAULT_MASK_SIZE,
        metavar="N",
        help=f"prefix length of each node's pod CIDR (default {DEFAULT_MASK_SIZE})",
    )
    parser.add_argument(
        "--identity-gc-grace",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds an identity stays unused before it is deleted (default 60)",
    )
    parser.add_argument(
        "--identity-gc-interval",
        type=float,
        default=15.0,
        metavar="S",
        help="seconds between identity GC passes (default 15)",
    )
    parser.add_argument(
        "--resync-interval",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds between full passes over every node (default 30)",
    )
    parser.add_argument(
        "--service-cluster-ip-range",
        default=str(DEFAULT_SERVICE_CIDR),
        metavar="CIDR",
        help=f"where ClusterIPs come from (default {DEFAULT_SERVICE_CIDR})",
    )
    ports = "-".join(map(str, DEFAULT_NODE_PORTS))
    parser.add_argument(
        "--service-node-port-range",
        default=ports,
        metavar="LOW-HIGH",
        help=f"where NodePorts come from (default {ports})",
    )
    parser.add_argument(
        "--lb-pool",
        action="append",
        default=[],
        metavar="CIDR",
        help="a LoadBalancer IP pool besides CiliumLoadBalancerIPPool objects; repeatable",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    low, sep, high = args.service_node_port_range.partition("-")
    if not (sep and low.isdigit() and high.isdigit()):
        parser.error(f"--service-node-port-range {args.service_node_port_range}: expected LOW-HIGH")
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return OperatorParams(
        store_url=args.store,
        ipam=IpamMode(args.ipam),
        pool=tuple(args.cluster_pool_ipv4_cidr or DEFAULT_POOL),
        mask_size=args.cluster_pool_ipv4_mask_size,
        resync_interval=args.resync_interval,
        identity_gc_grace=args.identity_gc_grace,
        identity_gc_interval=args.identity_gc_interval,
        service_cidr=args.service_cluster_ip_range,
        node_ports=(int(low), int(high)),
        lb_pools=tuple(args.lb_pool),
    )


async def run(operator: Operator) -> None:
    """Start the operator, run until a stop signal (or a component fails), stop it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await operator.start()
        stopping = asyncio.create_task(stop.wait())
        failing = asyncio.create_task(operator.wait())
        done, _ = await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stopping, failing):
            task.cancel()
        if failing in done:
            failing.result()  # raise a component's failure
    finally:
        await operator.stop()
    log.info("operator stopped")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    params = parse_args(argv)
    try:
        operator = Operator(params)
    except ValueError as exc:
        log.error("bad settings: %s", exc)
        return 2
    try:
        asyncio.run(run(operator))
    except Exception:
        log.exception("operator failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
