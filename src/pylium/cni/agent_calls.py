"""The agent calls the plugin makes (docs/agent-api.md), as CNI errors on failure.

Until `pylium.agent.client` lands, the HTTP-over-unix-socket exchange lives here, in one
function; everything else in the plugin goes through `AgentCalls`.
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from pylium.cni.errors import AgentError


class AgentUnreachable(Exception):
    """Nothing answers on the agent socket (absent, refused, or timed out)."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


class AgentCalls:
    """The endpoint operations of one agent, reached over its unix socket."""

    def __init__(self, socket_path: Path, timeout: float = 60.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def healthz(self) -> dict[str, Any]:
        """GET /v1/healthz: the agent's readiness (AgentError with the agent's code when not)."""
        return dict(self._call("GET", "/v1/healthz"))

    def put_endpoint(self, request: dict[str, Any]) -> dict[str, Any]:
        """PUT /v1/endpoints: create the endpoint; returns the Endpoint."""
        return dict(self._call("PUT", "/v1/endpoints", request))

    def find_endpoint(self, container_id: str, ifname: str) -> dict[str, Any] | None:
        """The endpoint of (container ID, ifname), or None."""
        found = self._call("GET", "/v1/endpoints?" + _query(container_id, ifname))
        return dict(found[0]) if found else None

    def delete_endpoint(self, container_id: str, ifname: str) -> None:
        """DELETE /v1/endpoints?containerID&ifname (success also when nothing matched)."""
        self._call("DELETE", "/v1/endpoints?" + _query(container_id, ifname))

    def check_endpoint(self, endpoint_id: int, netns: str) -> None:
        """POST /v1/endpoints/{id}/check: AgentError naming what is missing."""
        self._call("POST", f"/v1/endpoints/{endpoint_id}/check", {"netns": netns})

    def gc(self, valid: list[dict[str, str]]) -> list[dict[str, Any]]:
        """POST /v1/endpoints/gc: remove endpoints not in `valid`; returns the removed."""
        answer = self._call("POST", "/v1/endpoints/gc", {"valid": valid})
        return list(answer.get("removed", []))

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            try:
                conn.request(method, path, body=payload, headers=headers)
            except OSError as exc:  # absent socket, refused, timeout while connecting
                raise AgentUnreachable(f"{self.socket_path}: {exc}") from exc
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        try:
            decoded: Any = json.loads(data) if data else None
        except ValueError:
            decoded = None
            if response.status < 400:
                raise AgentError(999, "the agent answered something that is not JSON") from None
        if response.status >= 400:
            error = decoded if isinstance(decoded, dict) else {}
            raise AgentError(
                int(error.get("code", 999)),
                str(error.get("msg", f"agent answered HTTP {response.status}")),
                str(error.get("details", "")),
            )
        return decoded


def _query(container_id: str, ifname: str) -> str:
    return urlencode({"containerID": container_id, "ifname": ifname})
