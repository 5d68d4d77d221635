"""A synchronous client of the agent's REST API (docs/agent-api.md). Stdlib only.

The CNI plugin and the CLI import it, so it must start fast: it imports nothing outside the
standard library and opens one short connection per call.

Exceptions::

    AgentError              the agent answered with an error: code (CNI), msg, details, status
    └── AgentUnreachable    no agent on the socket (not running, socket missing, timed out)
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict, cast
from urllib.parse import quote, urlencode

DEFAULT_TIMEOUT = 60.0
"""Seconds to wait for an answer; ADD under load takes a while, kubelet's own timeout is longer."""


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


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


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
        self._call("DELETE", f"/v1/ipam/{quote(ip, safe='')}")

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

    def stream_lines(self, path: str) -> Iterator[bytes]:
        """GET `path` and yield the body line by line as it arrives (NDJSON streams such as
        GET /v1/flows?follow=1). The timeout covers connecting and the answer's headers;
        the body may then take as long as the agent keeps streaming."""
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            try:
                conn.request("GET", path)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as err:
                raise AgentUnreachable(self.socket_path, err) from err
            if response.status >= 400:
                raise _error_of(response.status, response.read())
            if conn.sock is not None:
                conn.sock.settimeout(None)
            yield from iter(response.readline, b"")
        finally:
            conn.close()

    def _call(self, method: str, path: str, body: object = None) -> Any:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            try:
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as err:
                raise AgentUnreachable(self.socket_path, err) from err
        finally:
            conn.close()
        if response.status >= 400:
            raise _error_of(response.status, data)
        return json.loads(data) if data else None


def _query(container_id: str, ifname: str) -> str:
    return urlencode({"containerID": container_id, "ifname": ifname})


def _error_of(status: int, data: bytes) -> AgentError:
    try:
        err = json.loads(data)
        return AgentError(int(err["code"]), str(err["msg"]), str(err.get("details", "")), status)
    except (ValueError, KeyError, TypeError):
        return AgentError(
            999, f"agent answered HTTP {status}", data.decode(errors="replace"), status
        )
