"""The built-in pod server, like agnhost serve-hostname: it answers on every declared
containerPort, TCP and UDP, with the pod's name and a newline.

TCP: each connection gets the answer at once; the server closes its side when the client closes
or sends its first line. UDP: each datagram gets the answer back to its sender. asyncio serves
many clients at once.

The request line `whoami` (`pylium probe --show-peer`) also asks for the address the server saw
the client at, to tell a preserved client IP from a SNATed one: over TCP a second line
`peer=IP` follows the name, over UDP the answer is `NAME peer=IP`.

Run as `python -m pylium.lab.podserver --name POD --tcp 80 --udp 53 ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import cast

_LINGER = 10.0
"""Seconds a TCP connection may stay open after the answer, waiting for the client to close."""
WHOAMI = b"whoami"
"""The request line asking for the client's address as the server saw it."""


def _peer(addr: tuple[str | int, ...] | None) -> str:
    return f"peer={addr[0] if addr else '?'}"


class _UdpAnswer(asyncio.DatagramProtocol):
    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.transport is None:
            return
        if data.strip() == WHOAMI:
            self.transport.sendto(self.answer.rstrip() + f" {_peer(addr)}\n".encode(), addr)
        else:
            self.transport.sendto(self.answer, addr)


async def serve(name: str, tcp: list[int], udp: list[int], host: str = "0.0.0.0") -> None:
    """Answer on every port until cancelled or SIGTERM."""
    answer = f"{name}\n".encode()

    async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Answer, wait for the client's first line (or its close), half-close, then drain
        # until the client closes: closing with unread client bytes would send a RST that can
        # discard the answer before the client reads it.
        with contextlib.suppress(ConnectionError, TimeoutError):
            writer.write(answer)
            await writer.drain()
            async with asyncio.timeout(_LINGER):
                if (await reader.readline()).strip() == WHOAMI:
                    writer.write(f"{_peer(writer.get_extra_info('peername'))}\n".encode())
                writer.write_eof()
                await writer.drain()
                while await reader.read(4096):
                    pass
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    loop = asyncio.get_running_loop()
    # UDP first: once a TCP port accepts, every port answers (readiness checks rely on it).
    transports = [
        (await loop.create_datagram_endpoint(lambda: _UdpAnswer(answer), local_addr=(host, port)))[
            0
        ]
        for port in udp
    ]
    servers = [await asyncio.start_server(on_tcp, host, port, backlog=1024) for port in tcp]
    ports = [f"{p}/tcp" for p in tcp] + [f"{p}/udp" for p in udp]
    print(f"{name}: answering on {' '.join(ports) or 'no port'}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        for transport in transports:
            transport.close()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(prog="pylium.lab.podserver", description=__doc__)
    parser.add_argument("--name", required=True, help="the answer (the pod's name)")
    parser.add_argument("--tcp", type=int, action="append", default=[], help="a TCP port")
    parser.add_argument("--udp", type=int, action="append", default=[], help="a UDP port")
    parser.add_argument(
        "--address",
        default="0.0.0.0",
        help="listen on this address only (default all); on a host with several addresses, "
        "UDP answers bound to all of them leave from the route's source, not the asked address",
    )
    args = parser.parse_args(argv)
    asyncio.run(serve(args.name, args.tcp, args.udp, args.address))


if __name__ == "__main__":
    main()
