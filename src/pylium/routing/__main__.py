"""`python -m pylium.routing --node NAME --store URL [--device eth0]`: the node-routes
component as a process of its own, run inside the node's namespace, until SIGTERM.

The lab runs it per node in native routing until the agent wires `NodeRoutes` in itself."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from pylium.routing.component import NodeRoutes, RoutesParams
from pylium.routing.kernel import PyrouteRouteKernel
from pylium.store import open_store


async def run(params: RoutesParams, store_url: str) -> None:
    """Run the component until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    store = open_store(store_url)
    kernel = PyrouteRouteKernel(params.device)
    routes = NodeRoutes(params, store, kernel)
    await kernel.start()
    try:
        await routes.start()
        await stop.wait()
        await routes.stop()
    finally:
        await kernel.stop()
        await store.close()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(prog="python -m pylium.routing", description=__doc__)
    parser.add_argument("--node", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--device", default="eth0")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    asyncio.run(run(RoutesParams(node=args.node, device=args.device), args.store))


if __name__ == "__main__":
    main()
