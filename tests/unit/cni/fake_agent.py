"""A scripted stand-in for the agent's REST API on a unix socket, for tests without root.

It records every request and answers from a table the test fills in, so the plugin's real
HTTP code path runs unchanged.
"""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any


@dataclass
class FakeAgent:
    socket: Path
    answers: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    """(method, path without query) -> (status, JSON body)."""
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    """(method, full path, decoded body) in arrival order."""


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    fake: FakeAgent


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        fake = self.server.fake
        fake.requests.append((self.command, self.path, body))
        status, answer = fake.answers.get((self.command, self.path.split("?")[0]), (404, None))
        data = b"" if answer is None else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = _answer

    def address_string(self) -> str:  # unix sockets have no peer address
        return "unix"

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve(socket: Path) -> Iterator[FakeAgent]:
    """Serve a FakeAgent on `socket` for the duration of the block."""
    fake = FakeAgent(socket)
    server = _Server(str(socket), _Handler)
    server.fake = fake
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
