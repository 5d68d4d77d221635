"""The lab's etcd proxy: lets processes inside node namespaces reach an etcd that listens on
the root namespace's loopback, at the same address (`127.0.0.1:PORT`) in every namespace.

A lab never routes between its namespaces and the root namespace (DESIGN §5, safety), so node
namespaces cannot reach the root's loopback. This process, started in the root namespace, opens
a listening socket on the etcd address *inside* each node namespace (a socket stays in the
namespace it was made in) and relays each accepted connection to etcd from the root namespace.
Every process of the lab then uses the one store URL. Plain byte relay: gRPC's HTTP/2 passes
through untouched.

Run as `python -m pylium.lab.storeproxy --lab LAB`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading

from pylium.lab import netns, record
from pylium.store.etcd import parse_url

log = logging.getLogger("pylium.lab.storeproxy")

_CHUNK = 65536


def etcd_endpoint(store_url: str) -> tuple[str, int] | None:
    """(host, port) of a one-endpoint etcd store URL on loopback; None for other stores.

    Raises:
        ValueError: an etcd URL the lab cannot proxy (several endpoints, or not loopback).
    """
    scheme, _, rest = store_url.partition("://")
    if scheme != "etcd":
        return None
    endpoints, _root = parse_url(rest)
    if len(endpoints) != 1 or not endpoints[0][0].startswith("127."):
        raise ValueError(
            f"{store_url}: a lab needs one etcd on this machine's loopback "
            "(etcd://127.0.0.1:PORT): its node namespaces reach it through a loopback proxy"
        )
    return endpoints[0]


def listen_in(ns_path: str, host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port inside the namespace at `ns_path`."""
    made: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            netns.enter(ns_path)  # this throwaway thread only
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
            made.append(sock)
        except BaseException as e:
            made.append(e)

    thread = threading.Thread(target=make, name=f"listen:{ns_path}")
    thread.start()
    thread.join()
    (result,) = made
    if isinstance(result, BaseException):
        raise result
    return result


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


async def relay(
    target: tuple[str, int], client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
) -> None:
    """Relay one accepted connection to `target` until both sides are done."""
    try:
        up_r, up_w = await asyncio.open_connection(*target)
    except OSError as e:
        log.warning("etcd %s:%d unreachable: %s", *target, e)
        client_w.close()
        return
    try:
        await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))
    finally:
        for w in (up_w, client_w):
            w.close()


async def serve(namespaces: list[str], target: tuple[str, int]) -> None:
    """Listen on `target` inside each namespace and relay, until cancelled or SIGTERM."""
    servers = []
    for ns in namespaces:
        sock = listen_in(str(netns.netns_path(ns)), *target)
        servers.append(await asyncio.start_server(lambda r, w: relay(target, r, w), sock=sock))
    log.info("relaying %s:%d from %s", *target, ", ".join(namespaces))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for server in servers:
            server.close()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(prog="pylium.lab.storeproxy", description=__doc__)
    parser.add_argument("--lab", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    lab = record.load(args.lab)
    if lab is None:
        raise SystemExit(f"no lab {args.lab!r}")
    target = etcd_endpoint(lab.store)
    if target is None:
        raise SystemExit(f"lab {args.lab!r} does not use etcd")
    asyncio.run(serve([n.netns for n in lab.nodes], target))


if __name__ == "__main__":
    main()
