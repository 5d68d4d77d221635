"""Service address allocation, as the API server (ClusterIPs, NodePorts) and Cilium's LB-IPAM
(LoadBalancer IPs) do it: pure functions over an `Allocations` record.

`assign_service` gives a Service what it lacks and checks what it asks for: a ClusterIP from the
service CIDR, a NodePort per port of NodePort/LoadBalancer services from the NodePort range.
`assign_load_balancer` gives a LoadBalancer service an ingress IP from the pools. Each returns
the object as it must be stored; each owner's record is set to exactly what the object needs,
so a type change or a removed port frees the rest. Free values are taken lowest first, so runs
are reproducible. A value is never given to two owners.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from pylium.api.errors import FieldError, InvalidObject

Object = dict[str, Any]

DEFAULT_SERVICE_CIDR = IPv4Network("10.96.0.0/16")
"""Kubernetes' usual `--service-cluster-ip-range` (kind, kubeadm)."""
DEFAULT_NODE_PORTS = (30000, 32767)
"""Kubernetes' default `--service-node-port-range`."""
IPAM_CONDITION = "cilium.io/IPAMRequestSatisfied"
"""The Service condition LB-IPAM reports, as Cilium's."""


@dataclass
class Allocations:
    """Who holds what. Owners: `ns/name` (ClusterIPs, LB IPs), `ns/name:port/PROTO` (NodePorts,
    so a re-applied port keeps its number)."""

    cluster_ips: dict[str, str] = field(default_factory=dict)
    node_ports: dict[str, str] = field(default_factory=dict)
    """`30080/TCP` -> owner."""
    lb_ips: dict[str, str] = field(default_factory=dict)

    def release(self, owner: str) -> None:
        """Free everything `owner` (a service's `ns/name`) holds."""
        for table in (self.cluster_ips, self.lb_ips):
            for k in [k for k, v in table.items() if v == owner]:
                del table[k]
        for k in [k for k, v in self.node_ports.items() if v.split(":")[0] == owner]:
            del self.node_ports[k]

    def owners(self) -> set[str]:
        """Every service (`ns/name`) holding something."""
        return {
            v.split(":")[0]
            for t in (self.cluster_ips, self.node_ports, self.lb_ips)
            for v in t.values()
        }


@dataclass(frozen=True)
class Ranges:
    """The cluster's ranges."""

    service_cidr: IPv4Network = DEFAULT_SERVICE_CIDR
    node_ports: tuple[int, int] = DEFAULT_NODE_PORTS


def owner_of(obj: Object) -> str:
    """`ns/name` of a Service object."""
    meta = obj["metadata"]
    return f"{meta.get('namespace') or 'default'}/{meta['name']}"


def assign_service(alloc: Allocations, ranges: Ranges, obj: Object) -> Object:
    """The Service with a ClusterIP and NodePorts filled in; `alloc` updated.

    Raises:
        InvalidObject: a requested ClusterIP or NodePort is out of range or held by another
            service, or a range is exhausted (messages as the API server's).
    """
    out = copy.deepcopy(obj)
    owner = owner_of(out)
    spec = out.setdefault("spec", {})
    name = str(out["metadata"]["name"])
    errors: list[FieldError] = []
    if spec.get("type") == "ExternalName":
        alloc.release(owner)
        return out
    work = copy.deepcopy(alloc)  # all or nothing: `alloc` changes only on success
    _assign_cluster_ip(work, ranges, spec, owner, errors)
    _assign_node_ports(work, ranges, spec, owner, errors)
    if errors:
        raise InvalidObject("Service", name, errors)
    alloc.cluster_ips, alloc.node_ports = work.cluster_ips, work.node_ports
    return out


def _assign_cluster_ip(
    alloc: Allocations, ranges: Ranges, spec: Object, owner: str, errors: list[FieldError]
) -> None:
    held = [ip for ip, o in alloc.cluster_ips.items() if o == owner]
    wanted = spec.get("clusterIP") or ((spec.get("clusterIPs") or [None])[0])
    if wanted == "None":
        for ip in held:
            del alloc.cluster_ips[ip]
        return
    if wanted:
        want = IPv4Address(wanted)
        if want not in ranges.service_cidr or want in (
            ranges.service_cidr.network_address,
            ranges.service_cidr.broadcast_address,
        ):
            errors.append(
                FieldError(
                    "spec.clusterIPs[0]",
                    f'Invalid value: "{want}": failed to allocate IP {want}: the provided IP'
                    f" ({want}) is not in the valid range. The range of valid IPs is"
                    f" {ranges.service_cidr}",
                )
            )
            return
        holder = alloc.cluster_ips.get(str(want))
        if holder not in (None, owner):
            errors.append(
                FieldError(
                    "spec.clusterIPs[0]",
                    f'Invalid value: "{want}": provided IP is already allocated',
                )
            )
            return
        chosen = str(want)
    elif held:
        chosen = held[0]
    else:
        free = next(
            (str(a) for a in ranges.service_cidr.hosts() if str(a) not in alloc.cluster_ips), None
        )
        if free is None:
            errors.append(
                FieldError(
                    "spec.clusterIPs",
                    f"Internal error: failed to allocate a serviceIP: range {ranges.service_cidr}"
                    " is full",
                )
            )
            return
        chosen = free
    for ip in held:
        del alloc.cluster_ips[ip]
    alloc.cluster_ips[chosen] = owner
    spec["clusterIP"] = chosen
    spec["clusterIPs"] = [chosen]
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")


def _assign_node_ports(
    alloc: Allocations, ranges: Ranges, spec: Object, owner: str, errors: list[FieldError]
) -> None:
    lo, hi = ranges.node_ports
    wants_ports = spec.get("type") in ("NodePort", "LoadBalancer")
    keep: set[str] = set()
    for i, p in enumerate(spec.get("ports") or [] if wants_ports else []):
        proto = str(p.get("protocol") or "TCP")
        port_owner = f"{owner}:{p['port']}/{proto}"
        requested = p.get("nodePort")
        if requested:
            key = f"{requested}/{proto}"
            if not lo <= int(requested) <= hi:
                errors.append(
                    FieldError(
                        f"spec.ports[{i}].nodePort",
                        f"Invalid value: {requested}: provided port is not in the valid range."
                        f" The range of valid ports is {lo}-{hi}",
                    )
                )
                continue
            holder = alloc.node_ports.get(key)
            if holder is not None and holder.split(":")[0] != owner:
                errors.append(
                    FieldError(
                        f"spec.ports[{i}].nodePort",
                        f"Invalid value: {requested}: provided port is already allocated",
                    )
                )
                continue
        else:
            key = next((k for k, o in alloc.node_ports.items() if o == port_owner), "") or next(
                (
                    f"{n}/{proto}"
                    for n in range(lo, hi + 1)
                    if f"{n}/{proto}" not in alloc.node_ports
                ),
                "",
            )
            if not key:
                errors.append(
                    FieldError(f"spec.ports[{i}].nodePort", "Internal error: no free NodePort")
                )
                continue
            p["nodePort"] = int(key.split("/")[0])
        alloc.node_ports[key] = port_owner
        keep.add(key)
    for k in [k for k, o in alloc.node_ports.items() if o.split(":")[0] == owner and k not in keep]:
        del alloc.node_ports[k]


def pool_addresses(pool: IPv4Network) -> Iterator[IPv4Address]:
    """Addresses LB-IPAM hands out from a block: all but the first and last (Cilium's default
    `allowFirstLastIPs: No`), every one of a /31 or /32."""
    if pool.prefixlen >= 31:
        yield from pool
    else:
        yield from pool.hosts()


def assign_load_balancer(alloc: Allocations, pools: Sequence[IPv4Network], obj: Object) -> Object:
    """The Service with `status.loadBalancer.ingress` set from the pools (requested
    `spec.loadBalancerIP` honoured when free and in a pool), or, failing that, a False
    IPAMRequestSatisfied condition; non-LoadBalancer services lose any LB IP."""
    out = copy.deepcopy(obj)
    owner = owner_of(out)
    spec = out.get("spec") or {}
    held = [ip for ip, o in alloc.lb_ips.items() if o == owner]
    status = out.setdefault("status", {})
    if spec.get("type") != "LoadBalancer":
        for ip in held:
            del alloc.lb_ips[ip]
        if held:
            status.pop("loadBalancer", None)
        return out
    requested = spec.get("loadBalancerIP")
    chosen: str | None = None
    reason = ""
    if requested:
        want = IPv4Address(requested)
        if not any(want in p for p in pools):
            reason = f"requested IP {want} is not in any pool"
        elif alloc.lb_ips.get(str(want)) not in (None, owner):
            reason = f"requested IP {want} is already allocated"
        else:
            chosen = str(want)
    elif held:
        chosen = held[0]
    else:
        chosen = next(
            (str(a) for p in pools for a in pool_addresses(p) if str(a) not in alloc.lb_ips), None
        )
        reason = "" if chosen else "no pool has a free IP"
    for ip in held:
        if ip != chosen:
            del alloc.lb_ips[ip]
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != IPAM_CONDITION]
    if chosen is None:
        status.pop("loadBalancer", None)
        conditions.append(
            {"type": IPAM_CONDITION, "status": "False", "reason": "out_of_ips", "message": reason}
        )
    else:
        alloc.lb_ips[chosen] = owner
        status["loadBalancer"] = {"ingress": [{"ip": chosen}]}
        conditions.append(
            {"type": IPAM_CONDITION, "status": "True", "reason": "satisfied", "message": ""}
        )
    status["conditions"] = conditions
    return out
