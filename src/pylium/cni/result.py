"""Build the ADD result (internal 1.1.0 shape) from the agent's Endpoint.

The pod gets `<ip>/32` on CNI_IFNAME and a default route via the node's router IP (DESIGN),
in the interface's own routing table when another interface of the pod had it first;
the host-side veth is listed without a sandbox and the container interface with one and its
MAC (podman 4.3 fails without it). When chained after another plugin, its result is kept and
pylium's interfaces, IPs and routes are appended, with interface indexes shifted to match.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pylium.cni.versions import LATEST, Result


def build_result(
    endpoint: dict[str, Any],
    netns: str,
    dns: dict[str, Any],
    prev_result: Result | None = None,
) -> Result:
    """The ADD success result for `endpoint` (raises KeyError/ValueError when it is malformed)."""
    ip = ipaddress.ip_address(endpoint["ipv4"])
    gateway = str(ipaddress.ip_address(endpoint["gateway"]))
    base: Result = prev_result or {"cniVersion": LATEST, "interfaces": [], "ips": [], "routes": []}
    interfaces = [dict(i) for i in base.get("interfaces") or []]
    first = len(interfaces)
    interfaces.append({"name": endpoint["hostIfname"], "mac": endpoint["hostMac"]})
    container = {"name": endpoint["ifname"], "mac": endpoint["mac"], "sandbox": netns}
    if endpoint.get("mtu"):
        container["mtu"] = int(endpoint["mtu"])
    interfaces.append(container)
    ips = [dict(i) for i in base.get("ips") or []]
    ips.append({"address": f"{ip}/{ip.max_prefixlen}", "gateway": gateway, "interface": first + 1})
    routes = [dict(r) for r in base.get("routes") or []]
    default: dict[str, Any] = {"dst": "0.0.0.0/0" if ip.version == 4 else "::/0", "gw": gateway}
    if endpoint.get("sourceTable"):
        # a later interface of the pod: its default route sits in a table of its own (1.1.0
        # `table`; older versions drop the field and the main table's default is the first's)
        default["table"] = int(endpoint["sourceTable"])
    if not any(
        r.get("dst") == default["dst"] and r.get("table") == default.get("table") for r in routes
    ):
        routes.append(default)
    result: Result = {
        "cniVersion": LATEST,
        "interfaces": interfaces,
        "ips": ips,
        "routes": routes,
    }
    merged_dns = {**(base.get("dns") or {}), **dns}
    if merged_dns:
        result["dns"] = merged_dns
    return result
