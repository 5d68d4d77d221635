"""The network configuration on stdin: decode, validate, and pick out what pylium uses.

Keys pylium does not know are accepted and ignored (runtimes pass `capabilities`,
`runtimeConfig`, `args` and `cni.dev/*` keys; other plugins' keys may appear too).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

from pylium import paths
from pylium.cni.errors import DecodeFailure, InvalidConfig
from pylium.cni.versions import require_supported, to_internal

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_MTU_RANGE = (68, 65535)


class NetConf(NamedTuple):
    """The parts of the request configuration pylium acts on. (A NamedTuple, not a dataclass:
    `dataclasses` imports `inspect`, ~5 ms of every plugin start.)"""

    cni_version: str
    name: str
    agent_socket: Path
    mtu: int | None
    dns: dict[str, Any]
    prev_result: dict[str, Any] | None
    """The previous plugin's result in the internal (1.1.0) shape, when chained."""
    raw: dict[str, Any]
    """The whole decoded object, for command-specific keys (GC's attachments)."""


def decode(stdin: bytes) -> dict[str, Any]:
    """Parse stdin as one JSON object (code 6 otherwise)."""
    try:
        obj = json.loads(stdin)
    except ValueError as exc:
        raise DecodeFailure("error decoding network config", str(exc)) from None
    if not isinstance(obj, dict):
        raise DecodeFailure("error decoding network config", "stdin is not a JSON object")
    return obj


def version_of(obj: dict[str, Any]) -> str:
    """The requested cniVersion; an absent one means 0.1.0, as libcni decodes it."""
    version = obj.get("cniVersion") or "0.1.0"
    if not isinstance(version, str):
        raise DecodeFailure("invalid version string", f"cniVersion is {version!r}")
    return version


def parse_config(obj: dict[str, Any]) -> NetConf:
    """Validate a decoded request configuration.

    Raises DecodeFailure/IncompatibleVersion for the version and InvalidConfig (code 7)
    for everything else, naming the offending key.
    """
    version = require_supported(version_of(obj))
    name = obj.get("name")
    if not name:
        raise InvalidConfig("missing network name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidConfig("invalid network name", f"name={name!r}")
    socket = obj.get("agentSocket", str(paths.DEFAULT_AGENT_SOCKET))
    if not isinstance(socket, str) or not socket:
        raise InvalidConfig("invalid agentSocket", f"agentSocket={socket!r}")
    return NetConf(
        cni_version=version,
        name=name,
        agent_socket=Path(socket),
        mtu=_mtu(obj.get("mtu")),
        dns=_dns(obj.get("dns")),
        prev_result=_prev_result(obj.get("prevResult"), version),
        raw=obj,
    )


def _mtu(value: Any) -> int | None:
    if value is None:
        return None
    low, high = _MTU_RANGE
    # bool is an int subclass: reject true/false explicitly.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidConfig("invalid mtu", f"mtu={value!r}, want an integer in {low}..{high}")
    return value


def _dns(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidConfig("invalid dns", f"dns={value!r}, want an object")
    for key in ("nameservers", "search", "options"):
        items = value.get(key)
        if items is not None and not (
            isinstance(items, list) and all(isinstance(i, str) for i in items)
        ):
            raise InvalidConfig("invalid dns", f"dns.{key}={items!r}, want a list of strings")
    if not isinstance(value.get("domain", ""), str):
        raise InvalidConfig("invalid dns", f"dns.domain={value['domain']!r}, want a string")
    return {k: v for k, v in value.items() if k in ("nameservers", "domain", "search", "options")}


def _prev_result(value: Any, version: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidConfig("invalid prevResult", "prevResult is not an object")
    for key in ("interfaces", "ips", "routes"):
        items = value.get(key)
        if items is not None and not (
            isinstance(items, list) and all(isinstance(i, dict) for i in items)
        ):
            raise InvalidConfig("invalid prevResult", f"prevResult.{key} is not a list of objects")
    # libcni converts the cached result to the request's version; trust an explicit one.
    return to_internal({"cniVersion": version, **value})
