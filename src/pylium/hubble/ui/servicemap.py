"""The service map: pods, services and namespaces as nodes, flows aggregated into edges.

Nodes come from the store (every Pod and Service, grouped by namespace) and from the flows
(peers outside the cluster: `world`, `host`, other reserved identities, or a bare IP). A flow
side is its pod when the flow names one, else the pod or Service (cluster IP) the store has at
its address, else its reserved identity or IP. Edges are keyed by (source, destination,
verdict), so a drop is its own edge next to forwarded traffic between the same two peers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pylium.hubble.flow import MIN_CLUSTER_IDENTITY, RESERVED_IDENTITIES, Endpoint, Flow, Verdict

Object = dict[str, Any]


@dataclass
class Edge:
    """Flows from one peer to another with one verdict."""

    source: str
    destination: str
    verdict: str
    flows: int = 0
    last_ns: int = 0
    drop_reasons: dict[str, int] = field(default_factory=dict)
    ports: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "verdict": self.verdict,
            "flows": self.flows,
            "lastNs": self.last_ns,
            "dropReasons": self.drop_reasons,
            "ports": sorted(self.ports),
        }


def _meta(obj: Object) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return str(meta.get("namespace") or "default"), str(meta.get("name", ""))


def known_ips(pods: Iterable[Object], services: Iterable[Object]) -> dict[str, str]:
    """Pod IP or cluster IP -> node id of its Pod or Service (a node names only its own pods
    in flows; the store knows every pod's address)."""
    out: dict[str, str] = {}
    for pod in pods:
        ns, name = _meta(pod)
        status = pod.get("status", {})
        for ip in [status.get("podIP"), *(p.get("ip") for p in status.get("podIPs") or [])]:
            if ip:
                out[str(ip)] = f"pod:{ns}/{name}"
    for svc in services:
        ns, name = _meta(svc)
        spec = svc.get("spec", {})
        for ip in [spec.get("clusterIP"), *(spec.get("clusterIPs") or [])]:
            if ip and ip != "None":
                out[str(ip)] = f"service:{ns}/{name}"
    return out


def peer_id(ep: Endpoint, ip: str, by_ip: dict[str, str]) -> str:
    """The node id a flow side maps to."""
    if ep.pod_name:
        return f"pod:{ep.namespace}/{ep.pod_name}"
    if ip in by_ip:
        return by_ip[ip]
    if 0 < ep.identity < MIN_CLUSTER_IDENTITY:
        return f"reserved:{RESERVED_IDENTITIES.get(ep.identity, str(ep.identity))}"
    return f"ip:{ip}" if ip else "reserved:unknown"


def _port(flow: Flow) -> str:
    l4 = flow.l4
    port = getattr(l4, "destination_port", 0)
    proto = type(l4).__name__ if l4 is not None else ""
    return f"{proto}/{port}" if port else proto


def build(
    pods: Iterable[Object], services: Iterable[Object], flows: Iterable[Flow]
) -> dict[str, Any]:
    """The map as JSON: `{"namespaces": [...], "nodes": [...], "edges": [...]}`."""
    nodes: dict[str, dict[str, Any]] = {}
    pods = list(pods)
    for pod in pods:
        ns, name = _meta(pod)
        status = pod.get("status", {})
        nodes[f"pod:{ns}/{name}"] = {
            "id": f"pod:{ns}/{name}",
            "kind": "pod",
            "namespace": ns,
            "name": name,
            "node": pod.get("spec", {}).get("nodeName") or "",
            "ip": status.get("podIP") or "",
        }
    services = list(services)
    for svc in services:
        ns, name = _meta(svc)
        nodes[f"service:{ns}/{name}"] = {
            "id": f"service:{ns}/{name}",
            "kind": "service",
            "namespace": ns,
            "name": name,
            "ip": svc.get("spec", {}).get("clusterIP") or "",
        }
    by_ip = known_ips(pods, services)
    edges: dict[tuple[str, str, str], Edge] = {}
    for flow in flows:
        src_ip, dst_ip = (flow.IP.source, flow.IP.destination) if flow.IP else ("", "")
        ends = (
            peer_id(flow.source, src_ip, by_ip),
            peer_id(flow.destination, dst_ip, by_ip),
        )
        for node_id, ep, ip in zip(
            ends, (flow.source, flow.destination), (src_ip, dst_ip), strict=True
        ):
            if node_id not in nodes:
                kind, _, name = node_id.partition(":")
                ns, _, short = name.rpartition("/")
                nodes[node_id] = {
                    "id": node_id,
                    "kind": kind,
                    "namespace": ns if kind in ("pod", "service") else "",
                    "name": short if kind in ("pod", "service") else name,
                    "ip": ip if kind != "reserved" else "",
                    "identity": ep.identity,
                }
        verdict = flow.verdict.name
        edge = edges.setdefault((*ends, verdict), Edge(*ends, verdict))
        edge.flows += 1
        edge.last_ns = max(edge.last_ns, flow.time_ns)
        if port := _port(flow):
            edge.ports.add(port)
        if flow.verdict == Verdict.DROPPED:
            reason = flow.drop_reason_desc.name
            edge.drop_reasons[reason] = edge.drop_reasons.get(reason, 0) + 1
    namespaces = sorted({n["namespace"] for n in nodes.values() if n["namespace"]})
    return {
        "namespaces": namespaces,
        "nodes": sorted(nodes.values(), key=lambda n: (n["namespace"], n["kind"], n["name"])),
        "edges": [e.to_json() for _, e in sorted(edges.items())],
    }
