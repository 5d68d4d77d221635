"""Request/response and connection-rate traffic for `pylium bench datapath` (stdlib only).

Run as a script inside a pod's network namespace (`python -I traffic.py ...`), so it starts
without importing pylium:

    server PORT               answer each request byte with one byte; after a `c` request
                              the server closes the connection (it holds the TIME_WAIT, so
                              the client's ephemeral ports do not run out)
    rr HOST PORT SECONDS      one connection: 1-byte request, 1-byte response, repeated
    crr HOST PORT SECONDS     connect, 1-byte request, 1-byte response, close, repeated

Clients print `{"count": N, "seconds": S}`; the server prints `ready` once it listens.
Nagle is off on both sides, so every request and response is one segment.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import time

KEEP_OPEN = b"r"
"""A request answered on a connection that stays open (rr)."""
CLOSE = b"c"
"""A request after whose answer the server closes the connection (crr)."""


def serve(port: int) -> None:
    """Answer requests on every connection until killed."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(1024)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            if sock is listener:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(conn, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(4096)
                if data:
                    sock.sendall(b"x" * len(data))
            except OSError:
                data = b""
            if not data or data.endswith(CLOSE):
                sel.unregister(sock)
                sock.close()


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request_response(host: str, port: int, seconds: float) -> tuple[int, float]:
    """Transactions completed on one connection in `seconds`."""
    count = 0
    with _connect(host, port) as sock:
        start = time.perf_counter()
        deadline = start + seconds
        now = start
        while now < deadline:
            sock.sendall(KEEP_OPEN)
            if sock.recv(1) != b"x":
                raise ConnectionError("the server closed the connection")
            count += 1
            now = time.perf_counter()
    return count, now - start


def connect_request_close(host: str, port: int, seconds: float) -> tuple[int, float]:
    """Whole connections (connect, request, response, close) completed in `seconds`."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while now < deadline:
        with _connect(host, port) as sock:
            sock.sendall(CLOSE)
            if sock.recv(1) != b"x" or sock.recv(1) != b"":
                raise ConnectionError("unexpected answer")
        count += 1
        now = time.perf_counter()
    return count, now - start


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode == "server":
        serve(int(args[0]))
        return
    run = {"rr": request_response, "crr": connect_request_close}[mode]
    count, elapsed = run(args[0], int(args[1]), float(args[2]))
    print(json.dumps({"count": count, "seconds": elapsed}))


if __name__ == "__main__":
    main(sys.argv[1:])
