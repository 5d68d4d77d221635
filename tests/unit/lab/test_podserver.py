"""The built-in pod server answers every port with the pod's name; probe reports what it saw."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from pylium.lab.podserver import serve
from pylium.lab.probe import probe


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_answers_many_tcp_and_udp_clients_with_the_name() -> None:
    tcp, udp = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    server = asyncio.create_task(serve("web-1", [tcp], [udp], host="127.0.0.1"))
    try:

        async def up() -> bool:
            return (await asyncio.to_thread(probe, "127.0.0.1", tcp, "tcp", 0.5)).ok

        for _ in range(100):
            if await up():
                break
            await asyncio.sleep(0.02)
        results = await asyncio.gather(
            *[asyncio.to_thread(probe, "127.0.0.1", tcp, "tcp", 5.0) for _ in range(50)],
            *[asyncio.to_thread(probe, "127.0.0.1", udp, "udp", 5.0) for _ in range(50)],
        )
        assert {(r.protocol, r.ok, r.answer) for r in results} == {
            ("tcp", True, "web-1"),
            ("udp", True, "web-1"),
        }
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


def test_probe_reports_refused_ports() -> None:
    tcp = probe("127.0.0.1", _free_port(socket.SOCK_STREAM), "tcp", 1.0)
    udp = probe("127.0.0.1", _free_port(socket.SOCK_DGRAM), "udp", 1.0)
    assert (tcp.ok, tcp.reason, tcp.answer) == (False, "refused", None)
    assert (udp.ok, udp.reason) == (False, "refused")
    assert tcp.to_json()["reason"] == "refused"


async def test_whoami_answers_the_client_address_and_the_default_stays_the_name() -> None:
    tcp, udp = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    server = asyncio.create_task(serve("web-1", [tcp], [udp], host="127.0.0.1"))
    try:
        for _ in range(100):
            if (await asyncio.to_thread(probe, "127.0.0.1", tcp, "tcp", 0.5)).ok:
                break
            await asyncio.sleep(0.02)
        answers = await asyncio.gather(
            asyncio.to_thread(probe, "127.0.0.1", tcp, "tcp", 5.0, True),
            asyncio.to_thread(probe, "127.0.0.1", udp, "udp", 5.0, True),
            asyncio.to_thread(probe, "127.0.0.1", tcp, "tcp", 5.0),
            asyncio.to_thread(probe, "127.0.0.1", udp, "udp", 5.0),
        )
        assert [r.answer for r in answers] == [
            "web-1 peer=127.0.0.1",
            "web-1 peer=127.0.0.1",
            "web-1",
            "web-1",
        ]
        # The whoami answer ends with the server's close, not the client's timeout.
        assert answers[0].seconds < 1.0
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
