"""A synchronous client of the agent's REST API (docs/agent-api.md). Stdlib only.

The CNI plugin and the CLI import it, so it must start fast: it imports nothing outside the
standard library and opens one short connection per call. It speaks the little HTTP/1.1 the
agent needs itself (request line, headers, a Content-Length body; answers by Content-Length,
chunked or to EOF): `http.client` drags in `email`, `ssl` and more, ~15 ms of a ~20 ms plugin
start here.

Exceptions::

    AgentError              the agent answered with an error: code (CNI), msg, details, status
    └── AgentUnreachable    no agent on the socket (not running, socket missing, timed out)
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TypedDict, cast

DEFAULT_TIMEOUT = 60.0
"""Seconds to wait for an answer; ADD under load takes a while, kubelet's own timeout is longer."""

_MAX_LINE = 65536
"""Longest status or header line accepted (as http.client)."""
_MAX_HEADERS = 100


class AgentError(Exception):
    """An error answer from the agent, carrying its CNI error code."""

    def __init__(self, code: int, msg: str, details: str = "", status: int = 0) -> None:
        super().__init__(f"{msg} ({details})" if details else msg)
        self.code = code
        self.msg = msg
        self.details = details
        self.status = status


class AgentUnreachable(AgentError):
    """Nothing answers on the agent socket (CNI code 11: try again later)."""

    def __init__(self, socket_path: Path, cause: BaseException) -> None:
        super().__init__(11, f"pylium agent unreachable at {socket_path}", str(cause))


class IpamUsage(TypedDict):
    cidr: str
    used: int
    available: int


class Health(TypedDict):
    status: str
    node: str
    ipam: IpamUsage


class AgentConfig(TypedDict):
    node: str
    podCIDR: str | None
    routerIP: str | None
    mtu: int
    stateDir: str


class IpamAllocation(TypedDict):
    ip: str
    cidr: str
    gateway: str
    owner: str


class Endpoint(TypedDict):
    id: int
    containerID: str
    ifname: str
    netns: str
    podName: str
    podNamespace: str
    ipv4: str
    gateway: str
    mac: str
    mtu: int
    hostIfname: str
    hostIfindex: int
    hostMac: str
    state: str
    createdAt: str


class DatapathMetric(TypedDict):
    reason: int
    reasonName: str
    direction: str
    packets: int
    bytes: int


class ConntrackEntry(TypedDict):
    scope: str
    proto: int
    src: str
    sport: int
    dst: str
    dport: int
    expiresIn: int
    txPackets: int
    txBytes: int
    rxPackets: int
    rxBytes: int
    flags: list[str]


class AgentClient:
    """Typed calls to one agent over its unix socket."""

    def __init__(self, socket_path: Path | str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout

    def healthz(self) -> Health:
        """GET /v1/healthz (AgentError code 11 while the agent is not ready)."""
        return cast(Health, self._call("GET", "/v1/healthz"))

    def config(self) -> AgentConfig:
        """GET /v1/config."""
        return cast(AgentConfig, self._call("GET", "/v1/config"))

    def ipam_allocate(self, owner: str) -> IpamAllocation:
        """POST /v1/ipam: take an address for `owner`."""
        return cast(IpamAllocation, self._call("POST", "/v1/ipam", {"owner": owner}))

    def ipam_release(self, ip: str) -> None:
        """DELETE /v1/ipam/{ip}: free an address (success also when it was free)."""
        self._call("DELETE", f"/v1/ipam/{_quote(ip)}")

    def endpoints(self) -> list[Endpoint]:
        """GET /v1/endpoints."""
        return cast(list[Endpoint], self._call("GET", "/v1/endpoints"))

    def endpoint(self, endpoint_id: int) -> Endpoint:
        """GET /v1/endpoints/{id} (AgentError status 404 if absent)."""
        return cast(Endpoint, self._call("GET", f"/v1/endpoints/{int(endpoint_id)}"))

    def find_endpoint(self, container_id: str, ifname: str) -> Endpoint | None:
        """GET /v1/endpoints?containerID&ifname: the attachment's endpoint, or None."""
        found = cast(
            list[Endpoint], self._call("GET", "/v1/endpoints?" + _query(container_id, ifname))
        )
        return found[0] if found else None

    def create_endpoint(
        self,
        container_id: str,
        ifname: str,
        netns: str,
        *,
        pod_name: str = "",
        pod_namespace: str = "",
        mtu: int | None = None,
        mac: str | None = None,
    ) -> Endpoint:
        """PUT /v1/endpoints (CNI ADD): returns once the interface is in place."""
        body = {
            "containerID": container_id,
            "ifname": ifname,
            "netns": netns,
            "podName": pod_name,
            "podNamespace": pod_namespace,
            "mtu": mtu,
            "mac": mac,
        }
        return cast(Endpoint, self._call("PUT", "/v1/endpoints", body))

    def delete_endpoint(self, endpoint_id: int) -> None:
        """DELETE /v1/endpoints/{id}."""
        self._call("DELETE", f"/v1/endpoints/{int(endpoint_id)}")

    def delete_attachment(self, container_id: str, ifname: str) -> None:
        """DELETE /v1/endpoints?containerID&ifname (CNI DEL; success when nothing matched)."""
        self._call("DELETE", "/v1/endpoints?" + _query(container_id, ifname))

    def check_endpoint(self, endpoint_id: int, netns: str | None = None) -> Endpoint:
        """POST /v1/endpoints/{id}/check (CNI CHECK): AgentError status 409 names what is
        missing."""
        return cast(
            Endpoint,
            self._call("POST", f"/v1/endpoints/{int(endpoint_id)}/check", {"netns": netns}),
        )

    def gc_endpoints(self, valid: list[tuple[str, str]]) -> list[Endpoint]:
        """POST /v1/endpoints/gc (CNI GC): delete endpoints not in `valid`; returns them."""
        body = {"valid": [{"containerID": c, "ifname": i} for c, i in valid]}
        answer = cast(dict[str, Any], self._call("POST", "/v1/endpoints/gc", body))
        return cast(list[Endpoint], answer["removed"])

    def datapath_metrics(self) -> list[DatapathMetric]:
        """GET /v1/datapath/metrics: forwarded (reason 0) and dropped packets and bytes by
        reason and direction, summed over CPUs."""
        answer = cast(dict[str, Any], self._call("GET", "/v1/datapath/metrics"))
        return cast(list[DatapathMetric], answer["metrics"])

    def datapath_conntrack(self) -> list[ConntrackEntry]:
        """GET /v1/datapath/conntrack: every conntrack entry (for debugging)."""
        answer = cast(dict[str, Any], self._call("GET", "/v1/datapath/conntrack"))
        return cast(list[ConntrackEntry], answer["entries"])

    def lb(self) -> dict[str, Any]:
        """GET /v1/lb: the desired LB maps as text and whether the kernel's maps hold them."""
        return cast(dict[str, Any], self._call("GET", "/v1/lb"))

    def flow_status(self) -> dict[str, Any]:
        """GET /v1/flows/status: flows held and seen, and lost events by source."""
        return cast(dict[str, Any], self._call("GET", "/v1/flows/status"))

    def stream_lines(self, path: str) -> Iterator[bytes]:
        """GET `path` and yield the body line by line as it arrives (NDJSON streams such as
        GET /v1/flows?follow=1). The timeout covers connecting and the answer's headers;
        the body may then take as long as the agent keeps streaming."""
        sock = self._connect()
        reader = sock.makefile("rb")
        try:
            try:
                _send(sock, "GET", path, None)
                status, headers = _read_head(reader)
                if status >= 400:
                    raise _error_of(status, _read_body(reader, status, headers))
                sock.settimeout(None)
                yield from _body_lines(reader, status, headers)
            except (OSError, _BadResponse) as err:
                raise AgentUnreachable(self.socket_path, err) from err
        finally:
            reader.close()
            sock.close()

    def _call(self, method: str, path: str, body: object = None) -> Any:
        payload = None if body is None else json.dumps(body).encode()
        sock = self._connect()
        reader = sock.makefile("rb")
        try:
            _send(sock, method, path, payload)
            status, headers = _read_head(reader)
            data = _read_body(reader, status, headers)
        except (OSError, _BadResponse) as err:
            raise AgentUnreachable(self.socket_path, err) from err
        finally:
            reader.close()
            sock.close()
        if status >= 400:
            raise _error_of(status, data)
        return json.loads(data) if data else None

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
        except OSError as err:
            sock.close()
            raise AgentUnreachable(self.socket_path, err) from err
        except BaseException:
            sock.close()
            raise
        return sock


class _BadResponse(Exception):
    """The peer's answer is not HTTP/1.x as this client reads it."""


def _send(sock: socket.socket, method: str, target: str, payload: bytes | None) -> None:
    """One request; `Connection: close` so the agent ends the connection after its answer."""
    head = f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    if payload is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    elif method in ("POST", "PUT"):
        head += "Content-Length: 0\r\n"
    sock.sendall(head.encode("ascii") + b"\r\n" + (payload or b""))


def _read_line(reader: IO[bytes]) -> bytes:
    line = reader.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise _BadResponse("line too long")
    if not line:
        raise _BadResponse("connection closed before the answer was complete")
    return line


def _read_head(reader: IO[bytes]) -> tuple[int, dict[str, str]]:
    """The status code and the headers (names lower-cased; a repeated header's last value)."""
    status_line = _read_line(reader).decode("latin-1")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise _BadResponse(f"bad status line {status_line.strip()!r}")
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS + 1):
        line = _read_line(reader).decode("latin-1")
        if line in ("\r\n", "\n"):
            return int(code), headers
        name, colon, value = line.partition(":")
        if not colon:
            raise _BadResponse(f"bad header line {line.strip()!r}")
        headers[name.strip().lower()] = value.strip()
    raise _BadResponse(f"more than {_MAX_HEADERS} headers")


def _read_body(reader: IO[bytes], status: int, headers: dict[str, str]) -> bytes:
    """The whole body, framed by chunked encoding, Content-Length, or the end of the stream."""
    if _bodiless(status):
        return b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return b"".join(_chunks(reader))
    length = headers.get("content-length")
    if length is None:
        return reader.read()
    if not length.isdigit():
        raise _BadResponse(f"bad Content-Length {length!r}")
    data = reader.read(int(length))
    if len(data) != int(length):
        raise _BadResponse(f"body ended after {len(data)} of {length} bytes")
    return data


def _bodiless(status: int) -> bool:
    """Answers that never have a body (RFC 9112 6.3) whatever their headers say: reading one
    to EOF would wait until the server gets round to closing the connection (~20 ms)."""
    return status in (204, 304) or status < 200


def _chunks(reader: IO[bytes]) -> Iterator[bytes]:
    """The data of each chunk of a chunked body as it arrives (trailers skipped)."""
    while True:
        size_field = _read_line(reader).split(b";", 1)[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError:
            raise _BadResponse(f"bad chunk size {size_field!r}") from None
        if size == 0:
            while _read_line(reader) not in (b"\r\n", b"\n"):
                pass
            return
        data = reader.read(size)
        if len(data) != size or _read_line(reader) not in (b"\r\n", b"\n"):
            raise _BadResponse("chunk cut short")
        yield data


def _body_lines(reader: IO[bytes], status: int, headers: dict[str, str]) -> Iterator[bytes]:
    """The body line by line (each ending in a newline except maybe the last), as it arrives."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        pending = b""
        for data in _chunks(reader):
            *lines, pending = (pending + data).split(b"\n")
            yield from (line + b"\n" for line in lines)
        if pending:
            yield pending
    elif "content-length" in headers or _bodiless(status):
        yield from _read_body(reader, status, headers).splitlines(keepends=True)
    else:
        yield from iter(reader.readline, b"")


def _quote(text: str) -> str:
    """Percent-encode everything but RFC 3986 unreserved characters (urllib's quote with
    safe="", which costs an extra import)."""
    return "".join(
        c
        if c.isascii() and (c.isalnum() or c in "-._~")
        else "".join(f"%{b:02X}" for b in c.encode())
        for c in text
    )


def _query(container_id: str, ifname: str) -> str:
    return f"containerID={_quote(container_id)}&ifname={_quote(ifname)}"


def _error_of(status: int, data: bytes) -> AgentError:
    try:
        err = json.loads(data)
        return AgentError(int(err["code"]), str(err["msg"]), str(err.get("details", "")), status)
    except (ValueError, KeyError, TypeError):
        return AgentError(
            999, f"agent answered HTTP {status}", data.decode(errors="replace"), status
        )
