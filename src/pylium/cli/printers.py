"""Table columns of `pylium get` per kind: what kubectl prints, plus pylium's own kinds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pylium.cli.output import NONE, age

Object = dict[str, Any]

UNSET = "<unset>"
"""kubectl's cell for an EndpointSlice without ports or endpoints."""


@dataclass(frozen=True)
class Column:
    """One table column: its header and how to read a cell from an object."""

    header: str
    cell: Callable[[Object], str]


def _name(obj: Object) -> str:
    return str(obj["metadata"]["name"])


def _age(obj: Object) -> str:
    return age(obj["metadata"].get("creationTimestamp"))


def _labels(labels: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or NONE


def _pod_ready(pod: Object) -> str:
    containers = pod.get("spec", {}).get("containers", [])
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses")
    if statuses is not None:
        ready = sum(1 for s in statuses if s.get("ready"))
    else:
        ready = len(containers) if status.get("phase") == "Running" else 0
    return f"{ready}/{len(containers)}"


def _pod_status(pod: Object) -> str:
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    return str((pod.get("status") or {}).get("phase") or "Pending")


def _pod_ports(pod: Object) -> str:
    ports = [
        f"{p['containerPort']}/{p.get('protocol', 'TCP')}"
        for c in pod.get("spec", {}).get("containers", [])
        for p in c.get("ports") or []
    ]
    return ",".join(ports) or NONE


def _status(obj: Object, field: str) -> str:
    return str((obj.get("status") or {}).get(field) or NONE)


def _service_ports(svc: Object) -> str:
    out = []
    for p in svc.get("spec", {}).get("ports") or []:
        node_port = f":{p['nodePort']}" if p.get("nodePort") else ""
        out.append(f"{p['port']}{node_port}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or NONE


def _external_ip(svc: Object) -> str:
    """kubectl's EXTERNAL-IP: a LoadBalancer's ingress addresses (`<pending>` until assigned),
    an ExternalName's name, else `spec.externalIPs`."""
    spec = svc.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return str(spec.get("externalName") or NONE)
    addresses = list(spec.get("externalIPs") or [])
    if spec.get("type") == "LoadBalancer":
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        addresses += [i.get("ip") or i.get("hostname") for i in ingress]
        return ",".join(a for a in addresses if a) or "<pending>"
    return ",".join(addresses) or NONE


MAX_SLICE_ENDPOINTS = 3
"""kubectl shows this many endpoint addresses of a slice, then "+ N more..."."""


def _slice_ports(eps: Object) -> str:
    ports = [str(p["port"]) for p in eps.get("ports") or [] if p.get("port") is not None]
    return ",".join(ports) or UNSET


def _slice_endpoints(eps: Object) -> str:
    addresses = [a for e in eps.get("endpoints") or [] for a in e.get("addresses") or []]
    if not addresses:
        return UNSET
    shown = ",".join(addresses[:MAX_SLICE_ENDPOINTS])
    more = len(addresses) - MAX_SLICE_ENDPOINTS
    return f"{shown} + {more} more..." if more > 0 else shown


def _pool_blocks(pool: Object) -> str:
    spec = pool.get("spec") or {}
    blocks = spec.get("blocks") or spec.get("cidrs") or []
    cidrs = [
        b.get("cidr") or f"{b.get('start')}-{b.get('stop')}" for b in blocks if isinstance(b, dict)
    ]
    return ",".join(cidrs) or NONE


def _node_status(node: Object) -> str:
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is None:
        return "Unknown"
    return "Ready" if ready.get("status") == "True" else "NotReady"


def _node_internal_ip(node: Object) -> str:
    addresses = (node.get("status") or {}).get("addresses") or []
    return next((a["address"] for a in addresses if a.get("type") == "InternalIP"), NONE)


def _node_cidrs(node: Object) -> str:
    spec = node.get("spec") or {}
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    return ",".join(cidrs) or NONE


def _pod_selector(obj: Object) -> str:
    selector = obj.get("spec", {}).get("podSelector") or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    parts += [
        f"{e['key']} {e['operator']} ({','.join(e.get('values') or [])})"
        for e in selector.get("matchExpressions") or []
    ]
    return ",".join(parts) or NONE


def _cilium_node_cidrs(cn: Object) -> str:
    return ",".join(((cn.get("spec") or {}).get("ipam") or {}).get("podCIDRs") or []) or NONE


def _cilium_node_used(cn: Object) -> str:
    return str(len(((cn.get("status") or {}).get("ipam") or {}).get("used") or {}))


def _security_labels(identity: Object) -> str:
    labels = identity.get("security-labels") or {}
    return ",".join(f"{k}={v}" if v else k for k, v in sorted(labels.items())) or NONE


NAME = Column("NAME", _name)
AGE = Column("AGE", _age)

# kind -> (default columns, extra columns -o wide appends, as kubectl does after AGE)
COLUMNS: dict[str, tuple[list[Column], list[Column]]] = {
    "Pod": (
        [
            NAME,
            Column("READY", _pod_ready),
            Column("STATUS", _pod_status),
            Column("IP", lambda o: _status(o, "podIP")),
            Column("NODE", lambda o: str(o.get("spec", {}).get("nodeName") or NONE)),
            AGE,
        ],
        [Column("HOST-IP", lambda o: _status(o, "hostIP")), Column("PORTS", _pod_ports)],
    ),
    "Service": (
        [
            NAME,
            Column("TYPE", lambda o: str(o.get("spec", {}).get("type") or "ClusterIP")),
            Column("CLUSTER-IP", lambda o: str(o.get("spec", {}).get("clusterIP") or NONE)),
            Column("EXTERNAL-IP", _external_ip),
            Column("PORT(S)", _service_ports),
            AGE,
        ],
        [Column("SELECTOR", lambda o: _labels(o.get("spec", {}).get("selector")))],
    ),
    "Namespace": (
        [
            NAME,
            Column("STATUS", lambda o: str((o.get("status") or {}).get("phase", "Active"))),
            AGE,
        ],
        [],
    ),
    "Node": (
        [
            NAME,
            Column("STATUS", _node_status),
            Column("INTERNAL-IP", _node_internal_ip),
            Column("POD-CIDRS", _node_cidrs),
            AGE,
        ],
        [],
    ),
    "NetworkPolicy": ([NAME, Column("POD-SELECTOR", _pod_selector), AGE], []),
    "CiliumNode": (
        [NAME, Column("POD-CIDRS", _cilium_node_cidrs), Column("IPS-USED", _cilium_node_used), AGE],
        [],
    ),
    "CiliumIdentity": ([Column("ID", _name), Column("LABELS", _security_labels), AGE], []),
    "EndpointSlice": (
        [
            NAME,
            Column("ADDRESSTYPE", lambda o: str(o.get("addressType") or NONE)),
            Column("PORTS", _slice_ports),
            Column("ENDPOINTS", _slice_endpoints),
            AGE,
        ],
        [],
    ),
    "CiliumLoadBalancerIPPool": (
        [
            NAME,
            Column("DISABLED", lambda o: str(bool((o.get("spec") or {}).get("disabled"))).lower()),
            Column("BLOCKS", _pool_blocks),
            AGE,
        ],
        [],
    ),
}


POLICY_COLUMNS = [
    Column("NAME", lambda r: str(r["name"])),
    Column("KIND", lambda r: str(r["kind"])),
    Column("SELECTS", lambda r: f"{len(r['selects'])} endpoints"),
]
"""`pylium get policies`: rows are {name, kind, namespace, selects: [endpoint keys]}
(cli/policy.py computes the selections)."""


def service_backend_columns(slices: list[Object]) -> list[Column]:
    """`get services -o wide`, after kubectl's columns: every frontend the service has (NodePorts
    as `*:PORT`, on every node address) and every backend with its state, as Cilium's `service
    list` shows them: active (ready), terminating (serving existing connections only) or
    not-ready. Both come from the same model the agents program."""
    from pylium.loadbalancer.services import service_state, slice_service

    by_service: dict[tuple[str, str], list[Object]] = {}
    for eps in slices:
        owner = slice_service(eps)
        if owner is not None:
            by_service.setdefault((owner.namespace, owner.name), []).append(eps)

    computed: dict[tuple[str, str], list[Any]] = {}

    def ports(svc: Object) -> list[Any]:
        """The service's model, computed once for both columns."""
        key = (svc["metadata"].get("namespace", ""), svc["metadata"]["name"])
        if key not in computed:
            state = service_state(svc, by_service.get(key, []))
            computed[key] = list(state.ports) if state else []
        return computed[key]

    def frontends(svc: Object) -> str:
        out = []
        for p in ports(svc):
            proto = f"{p.port}/{p.protocol}"
            addrs = (p.cluster_ip, *p.external_ips, *p.load_balancer_ips)
            out += [f"{ip}:{proto}" for ip in addrs if ip]
            if p.node_port:
                out.append(f"*:{p.node_port}/{p.protocol}")
        return ",".join(out) or NONE

    def backends(svc: Object) -> str:
        seen: dict[str, str] = {}
        for p in ports(svc):
            for e in p.endpoints:
                state = "active" if e.ready else "terminating" if e.terminating else "not-ready"
                seen.setdefault(f"{e.addr_port}/{p.protocol}", state)
        return ",".join(f"{b}({state})" for b, state in seen.items()) or NONE

    return [Column("FRONTENDS", frontends), Column("BACKENDS", backends)]


def columns_for(kind: str, wide: bool) -> list[Column]:
    """The columns of a kind's table (NAME and AGE for kinds without their own)."""
    default, extra = COLUMNS.get(kind, ([NAME, AGE], []))
    return [*default, *extra] if wide else default
