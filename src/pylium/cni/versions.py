"""CNI spec versions and result conversion between them (pure functions).

Results are handled in one internal shape, the 1.1.0 one, and converted on the way out. What
differs between the versions this plugin speaks:

- 0.3.0, 0.3.1, 0.4.0: every `ips[]` entry carries `version` ("4" or "6");
- 1.0.0 drops `ips[].version`;
- 1.1.0 adds optional `interfaces[].mtu|socketPath|pciID` and `routes[].mtu|advmss|priority|
  table|scope`, which older versions do not know (libcni 1.1.2 cannot decode them), so they are
  dropped when converting down.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from pylium.cni.errors import DecodeFailure, IncompatibleVersion

SUPPORTED_VERSIONS: tuple[str, ...] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
"""The cniVersions this plugin accepts and answers in, oldest first."""

LATEST = SUPPORTED_VERSIONS[-1]

_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")

_INTERFACE_KEYS_1_1 = ("mtu", "socketPath", "pciID")
_ROUTE_KEYS_1_1 = ("mtu", "advmss", "priority", "table", "scope")

Result = dict[str, Any]


def parse_version(version: str) -> tuple[int, int, int]:
    """'1.0.0' -> (1, 0, 0); a malformed string is a decode failure (code 6)."""
    match = _VERSION_RE.match(version)
    if match is None:
        raise DecodeFailure("invalid version string", f"cannot parse cniVersion {version!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch)


def require_supported(version: str) -> str:
    """Return `version` if this plugin speaks it; raise code 1 (or 6 when malformed)."""
    parse_version(version)
    if version not in SUPPORTED_VERSIONS:
        raise IncompatibleVersion(
            "incompatible CNI versions",
            f"config is {version!r}, plugin supports {list(SUPPORTED_VERSIONS)}",
        )
    return version


def at_least(version: str, minimum: str) -> bool:
    """Whether `version` >= `minimum` (both well-formed)."""
    return parse_version(version) >= parse_version(minimum)


def to_internal(result: Result) -> Result:
    """Bring a result of any supported version (a prevResult) into the 1.1.0 shape.

    Raises IncompatibleVersion when its cniVersion is not one this plugin speaks.
    """
    version = require_supported(str(result.get("cniVersion", "")))
    out = _copy_result(result)
    out["cniVersion"] = LATEST
    if not at_least(version, "1.0.0"):
        for ip in out["ips"]:
            ip.pop("version", None)
    return out


def from_internal(result: Result, version: str) -> Result:
    """Convert a 1.1.0-shaped result to `version` (one of SUPPORTED_VERSIONS)."""
    require_supported(version)
    out = _copy_result(result)
    out["cniVersion"] = version
    if version == LATEST:
        return out
    for iface in out["interfaces"]:
        for key in _INTERFACE_KEYS_1_1:
            iface.pop(key, None)
    for route in out["routes"]:
        for key in _ROUTE_KEYS_1_1:
            route.pop(key, None)
    if not at_least(version, "1.0.0"):
        for ip in out["ips"]:
            ip["version"] = str(ipaddress.ip_interface(ip["address"]).version)
    return out


def _copy_result(result: Result) -> Result:
    """A deep enough copy to edit lists of objects; missing lists become empty ones."""
    out = {k: v for k, v in result.items() if k not in ("interfaces", "ips", "routes")}
    for key in ("interfaces", "ips", "routes"):
        out[key] = [dict(item) for item in result.get(key) or []]
    return out
