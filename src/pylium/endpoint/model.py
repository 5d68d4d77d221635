"""Endpoint records: what the agent knows about one pod interface, in API and state-file form.

The JSON form (camelCase) is the `Endpoint` of docs/agent-api.md; the state file holds exactly
that, so a restarted agent reads back what it served.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any, Literal

EndpointState = Literal["creating", "ready", "deleting"]

HOST_IFNAME_PREFIX = "lxc"
"""Host-side veth names: lxc + 11 hex chars (Cilium's naming; fits IFNAMSIZ's 15 bytes)."""

MIN_MTU = 576
MAX_MTU = 65535


class EndpointError(Exception):
    """Base of endpoint errors.

    Tree::

        EndpointError
        ├── InvalidRequest     the request is malformed (CNI code 7)
        ├── NetnsMissing       ADD into a namespace that does not exist (CNI code 3)
        ├── InterfaceExists    CNI_IFNAME is already in the pod namespace
        ├── EndpointNotFound   no such endpoint (HTTP 404)
        └── CheckFailed        CHECK found something missing (names it)
    """


class InvalidRequest(EndpointError):
    """The request is malformed."""


class NetnsMissing(EndpointError):
    """The pod's network namespace does not exist."""


class InterfaceExists(EndpointError):
    """The requested interface name is taken in the pod namespace; it was left untouched."""


class EndpointNotFound(EndpointError):
    """No endpoint with that id or (containerID, ifname)."""


class CheckFailed(EndpointError):
    """An endpoint lacks something it needs; `problems` names each missing piece."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def host_ifname(container_id: str, ifname: str) -> str:
    """The host-side veth name of an attachment: deterministic, so a retry finds it."""
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    return HOST_IFNAME_PREFIX + digest[:11]


def owner_of(container_id: str, ifname: str) -> str:
    """The IPAM owner string of an attachment."""
    return f"{container_id}/{ifname}"


@dataclass(frozen=True)
class EndpointRequest:
    """A PUT /v1/endpoints body (CNI ADD)."""

    container_id: str
    ifname: str
    netns: str
    pod_name: str = ""
    pod_namespace: str = ""
    mtu: int | None = None
    mac: str | None = None

    @classmethod
    def from_json(cls, body: Any) -> EndpointRequest:
        """Validate and parse the API body; raises InvalidRequest naming the bad field."""
        if not isinstance(body, dict):
            raise InvalidRequest("the body must be a JSON object")
        container_id = _text(body, "containerID", required=True)
        ifname = _text(body, "ifname", required=True)
        netns = _text(body, "netns", required=True)
        if (
            len(ifname.encode()) > 15
            or ifname in (".", "..")
            or any(c in ifname for c in "/: \t\n")
        ):
            raise InvalidRequest(f"invalid ifname {ifname!r}")
        if "/" in container_id:
            raise InvalidRequest(f"invalid containerID {container_id!r}")
        if not netns.startswith("/"):
            raise InvalidRequest(f"netns must be an absolute path, got {netns!r}")
        mtu = body.get("mtu")
        if mtu is not None and (
            not isinstance(mtu, int) or isinstance(mtu, bool) or not MIN_MTU <= mtu <= MAX_MTU
        ):
            raise InvalidRequest(f"mtu must be an integer in {MIN_MTU}..{MAX_MTU}, got {mtu!r}")
        mac = body.get("mac")
        if mac is not None and not _is_mac(mac):
            raise InvalidRequest(f"invalid mac {mac!r}")
        return cls(
            container_id=container_id,
            ifname=ifname,
            netns=netns,
            pod_name=_text(body, "podName"),
            pod_namespace=_text(body, "podNamespace"),
            mtu=mtu,
            mac=mac,
        )


@dataclass(frozen=True)
class Endpoint:
    """One pod interface managed by this agent."""

    id: int
    container_id: str
    ifname: str
    netns: str
    host_ifname: str
    state: EndpointState
    created_at: str
    mtu: int
    pod_name: str = ""
    pod_namespace: str = ""
    ipv4: str = ""
    gateway: str = ""
    mac: str = ""
    host_ifindex: int = 0
    host_mac: str = ""
    source_table: int = 0
    """0: the pod's default route goes through this interface (main table). Otherwise another
    interface had it first, and this one's routes sit in this table, which a rule selects for
    packets from its address (source-based routing)."""

    @property
    def key(self) -> tuple[str, str]:
        """(containerID, ifname): what CNI identifies an attachment by."""
        return (self.container_id, self.ifname)

    @property
    def owner(self) -> str:
        """The IPAM owner of this endpoint's address."""
        return owner_of(self.container_id, self.ifname)

    def to_json(self) -> dict[str, Any]:
        """The API (and state-file) form."""
        return {_CAMEL.get(k, k): v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Endpoint:
        """Parse the form `to_json` writes."""
        snake = {v: k for k, v in _CAMEL.items()}
        return cls(**{snake.get(k, k): v for k, v in data.items() if snake.get(k, k) in _FIELDS})


_CAMEL = {
    "container_id": "containerID",
    "host_ifname": "hostIfname",
    "created_at": "createdAt",
    "pod_name": "podName",
    "pod_namespace": "podNamespace",
    "host_ifindex": "hostIfindex",
    "host_mac": "hostMac",
    "source_table": "sourceTable",
}
_FIELDS = set(Endpoint.__dataclass_fields__)


def _text(body: dict[str, Any], key: str, required: bool = False) -> str:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise InvalidRequest(f"missing {key}")
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{key} must be a string, got {value!r}")
    return value


def _is_mac(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = value.split(":")
    return len(parts) == 6 and all(
        len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts
    )
