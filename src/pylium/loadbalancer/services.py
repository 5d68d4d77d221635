"""Service + EndpointSlices (store objects) -> ServiceState (what the proxies serve).

Slices belong to a Service by the `kubernetes.io/service-name` label. Each slice lists the
resolved port numbers by Service port name, so a named targetPort that maps to different numbers
on different pods arrives as several slices; an endpoint takes the number its slice gives.
Headless (`clusterIP: None`) and ExternalName services have nothing to serve: None.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address
from typing import Any

from pylium.api.core import DEFAULT_AFFINITY_TIMEOUT
from pylium.api.discovery import SERVICE_NAME_LABEL
from pylium.loadbalancer.model import Algorithm, Endpoint, ServiceName, ServicePort, ServiceState

Object = dict[str, Any]

ALGORITHM_ANNOTATION = "service.cilium.io/lb-algorithm"
"""Per-service backend selection (`random` or `maglev`), as Cilium's annotation."""


def service_name(obj: Object) -> ServiceName:
    """The ServiceName of a Service object."""
    meta = obj["metadata"]
    return ServiceName(str(meta.get("namespace") or "default"), str(meta["name"]))


def slice_service(obj: Object) -> ServiceName | None:
    """The Service an EndpointSlice belongs to (by its label), or None."""
    meta = obj["metadata"]
    name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return ServiceName(str(meta.get("namespace") or "default"), str(name)) if name else None


def service_state(service: Object, slices: Iterable[Object]) -> ServiceState | None:
    """What the node serves for `service` given its EndpointSlices; None if nothing."""
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return None
    cluster_ip = _ipv4(spec.get("clusterIP"))
    if spec.get("clusterIP") == "None":
        return None
    name = service_name(service)
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        client = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = int(client.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
    annotations = service["metadata"].get("annotations") or {}
    algorithm = annotations.get(ALGORITHM_ANNOTATION)
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    lb_ips = tuple(sorted({ip for i in ingress if (ip := _ipv4(i.get("ip"))) is not None}))
    node_port_types = ("NodePort", "LoadBalancer")
    slice_list = list(slices)
    ports = []
    for p in spec.get("ports") or []:
        protocol = str(p.get("protocol") or "TCP")
        port_name = str(p.get("name") or "")
        ports.append(
            ServicePort(
                service=name,
                name=port_name,
                protocol=protocol,
                port=int(p["port"]),
                cluster_ip=cluster_ip,
                node_port=p.get("nodePort") if spec.get("type") in node_port_types else None,
                external_ips=tuple(
                    sorted({ip for e in spec.get("externalIPs") or [] if (ip := _ipv4(e))})
                ),
                load_balancer_ips=lb_ips if spec.get("type") == "LoadBalancer" else (),
                affinity_timeout=affinity,
                external_local=spec.get("externalTrafficPolicy") == "Local",
                internal_local=spec.get("internalTrafficPolicy") == "Local",
                algorithm=Algorithm(algorithm) if algorithm in set(Algorithm) else None,
                endpoints=_endpoints(slice_list, port_name, protocol),
            )
        )
    ports.sort(key=lambda sp: (sp.protocol, sp.port))
    return ServiceState(name, tuple(ports))


def _endpoints(slices: list[Object], port_name: str, protocol: str) -> tuple[Endpoint, ...]:
    """Endpoints serving one service port across slices; an address in two slices keeps the
    readier entry."""
    found: dict[tuple[IPv4Address, int], Endpoint] = {}
    for sl in slices:
        if sl.get("addressType", "IPv4") != "IPv4":
            continue
        number = next(
            (
                sp.get("port")
                for sp in sl.get("ports") or []
                if str(sp.get("name") or "") == port_name
                and str(sp.get("protocol") or "TCP") == protocol
            ),
            None,
        )
        if number is None:
            continue
        for ep in sl.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            ready = cond.get("ready") is not False
            endpoint = Endpoint(
                address=IPv4Address(ep["addresses"][0]),
                port=int(number),
                node=ep.get("nodeName"),
                ready=ready,
                serving=cond.get("serving", ready) is not False,
                terminating=bool(cond.get("terminating")),
            )
            key = (endpoint.address, endpoint.port)
            if key not in found or (endpoint.ready and not found[key].ready):
                found[key] = endpoint
    return tuple(sorted(found.values()))


def _ipv4(value: object) -> IPv4Address | None:
    if not isinstance(value, str) or not value or value == "None":
        return None
    try:
        return IPv4Address(value)
    except ValueError:
        return None
