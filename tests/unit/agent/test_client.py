"""The agent client's own HTTP/1.1 over a unix socket, against canned answers."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pylium.agent.client import AgentClient, AgentError, AgentUnreachable


class CannedServer:
    """Answers each connection with the next canned bytes and records the requests."""

    def __init__(self, path: Path, answers: list[bytes]) -> None:
        self.path = path
        self.answers = answers
        self.hang_up = threading.Event()
        """Set to close connections; unset, the server keeps each open after its answer."""
        self.hang_up.set()
        self.requests: list[bytes] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        for answer in self.answers:
            conn, _ = self._sock.accept()
            with conn:
                self.requests.append(_read_request(conn))
                conn.sendall(answer)
                self.hang_up.wait(timeout=10)

    def close(self) -> None:
        self.hang_up.set()
        self._thread.join(timeout=5)
        self._sock.close()


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            while len(body) < int(line.split(b":")[1]):
                body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    servers: list[CannedServer] = []

    def start(*answers: bytes) -> tuple[AgentClient, CannedServer]:
        server = CannedServer(tmp_path / f"agent{len(servers)}.sock", list(answers))
        servers.append(server)
        return AgentClient(server.path, timeout=5), server

    yield start
    for server in servers:
        server.close()


def json_answer(status: int, obj: object, reason: str = "OK") -> bytes:
    body = json.dumps(obj).encode()
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def chunked(*pieces: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces)
    return head + body + b"0\r\nX-Trailer: t\r\n\r\n"


def test_a_put_sends_one_json_request_and_parses_the_answer(serve):
    client, server = serve(json_answer(201, {"id": 7, "ipv4": "10.0.0.2"}, "Created"))
    ep = client.create_endpoint("c1", "eth0", "/var/run/netns/p", pod_name="p")
    assert ep == {"id": 7, "ipv4": "10.0.0.2"}
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "PUT /v1/endpoints HTTP/1.1"
    assert {"Host: localhost", "Connection: close", f"Content-Length: {len(body)}"} <= set(lines)
    assert json.loads(body)["containerID"] == "c1"


def test_query_values_are_percent_encoded(serve):
    client, server = serve(json_answer(200, []))
    assert client.find_endpoint("a b/c&d=é", "eth0") is None
    target = server.requests[0].split(b" ")[1].decode()
    assert target == "/v1/endpoints?containerID=a%20b%2Fc%26d%3D%C3%A9&ifname=eth0"


def test_a_post_without_body_sends_a_zero_content_length(serve):
    client, server = serve(json_answer(200, {"removed": []}))
    client._call("POST", "/v1/endpoints/gc")
    assert b"Content-Length: 0\r\n" in server.requests[0]


def test_no_content_answers_none_without_waiting_for_the_close(serve):
    client, server = serve(b"HTTP/1.1 204 No Content\r\n\r\n")  # aiohttp sends no length
    server.hang_up.clear()
    client.timeout = 1  # waiting for EOF would time out
    assert client.delete_attachment("c1", "eth0") is None


def test_chunked_and_to_eof_bodies_are_read(serve):
    client, _ = serve(
        chunked(b'[{"id": 1', b', "ipv4": "10.0.0.2"}]'),
        b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n[{"id": 2}]',
    )
    assert client.endpoints() == [{"id": 1, "ipv4": "10.0.0.2"}]
    assert client.endpoints() == [{"id": 2}]


def test_stream_lines_yields_lines_across_chunks(serve):
    client, _ = serve(chunked(b'{"a": 1}\n{"b"', b": 2}\n", b'{"c": 3}'))
    assert list(client.stream_lines("/v1/flows?follow=1")) == [
        b'{"a": 1}\n',
        b'{"b": 2}\n',
        b'{"c": 3}',
    ]


def test_error_answers_carry_the_cni_code_and_the_http_status(serve):
    err_body = {"code": 7, "msg": "invalid netns", "details": "no such file"}
    client, _ = serve(
        json_answer(409, err_body, "Conflict"),
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 4\r\n\r\noops",
    )
    with pytest.raises(AgentError) as first:
        client.check_endpoint(3)
    assert (first.value.code, first.value.msg, first.value.details) == (
        7,
        "invalid netns",
        "no such file",
    )
    assert first.value.status == 409 and not isinstance(first.value, AgentUnreachable)
    with pytest.raises(AgentError) as second:
        client.config()
    assert (second.value.code, second.value.status, second.value.details) == (999, 502, "oops")


def test_stream_lines_raises_error_answers_before_yielding(serve):
    client, _ = serve(json_answer(400, {"code": 7, "msg": "bad filter"}, "Bad Request"))
    with pytest.raises(AgentError) as err:
        next(client.stream_lines("/v1/flows?x=1"))
    assert (err.value.code, err.value.status) == (7, 400)


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # closed without a word
        b"SSH-2.0-OpenSSH\r\n\r\n",  # not HTTP
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n[1,",  # body cut short
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad chunk size
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",  # bad header
    ],
)
def test_broken_answers_are_unreachable(serve, answer):
    client, _ = serve(answer)
    with pytest.raises(AgentUnreachable) as err:
        client.healthz()
    assert err.value.code == 11


def test_nothing_listening_is_unreachable(tmp_path):
    missing = AgentClient(tmp_path / "missing.sock", timeout=1)
    with pytest.raises(AgentUnreachable, match=r"missing\.sock"):
        missing.healthz()
    refused = tmp_path / "refused.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(refused))  # bound, never listening: connect is refused
        with pytest.raises(AgentUnreachable) as err:
            AgentClient(refused, timeout=1).endpoints()
    assert isinstance(err.value.__cause__, ConnectionRefusedError)


def test_a_silent_agent_times_out_as_unreachable(tmp_path):
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        sock.listen()  # accepts into the backlog, never answers
        with pytest.raises(AgentUnreachable) as err:
            AgentClient(path, timeout=0.2).healthz()
    assert isinstance(err.value.__cause__, TimeoutError)


def test_calls_leave_no_descriptor_open(serve):
    client, _ = serve(*[json_answer(200, {"ok": True})] * 20, b"")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        client.config()
    with pytest.raises(AgentUnreachable):
        client.config()
    assert len(os.listdir("/proc/self/fd")) == before
