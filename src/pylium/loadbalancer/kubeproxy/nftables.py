"""Service rules as `nft -f` input, laid out as kube-proxy's nftables mode (table `ip
kube-proxy`; see kube-proxy's `pkg/proxy/nftables/README.md` for the theory).

Dispatch is by verdict maps, not rule lists: `services` looks up `ip daddr . meta l4proto . th
dport` in `service-ips` (ClusterIP -> `service-`/`local-` chain, external and LB IPs ->
`external-` chain) and, for node addresses (`nodeport-ips`), `meta l4proto . th dport` in
`service-nodeports`. A policy chain picks an endpoint chain with one `numgen random mod N-i
== 0 goto` rule per endpoint (not kube-proxy's anonymous vmap; see `_balance`); affinity is a
dynamic set of client addresses per endpoint. Services with no endpoint get an element in
`no-endpoint-services` / `no-endpoint-nodeports` that jumps to `reject-chain` (or
drops, for a Local policy with endpoints elsewhere), checked in the filter hooks.

`ServiceObjects` is what one service puts in the table; `full_sync` rebuilds the table in
one transaction, `partial_sync` changes only what changed services own. A chain that goes away
is flushed at once and deleted by the next sync: the kernel refuses to delete a chain while a
map element still refers to it, and element deletions only take effect when the transaction
that carries them commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pylium.loadbalancer.kubeproxy import names
from pylium.loadbalancer.kubeproxy.params import ProxyParams
from pylium.loadbalancer.kubeproxy.plan import NoEndpoints, plan
from pylium.loadbalancer.model import Endpoint, ServicePort

TABLE = "kube-proxy"
FAMILY = "ip"
T = f"{FAMILY} {TABLE}"

SERVICES = "services"
SERVICE_IPS = "service-ips"
SERVICE_NODEPORTS = "service-nodeports"
NODEPORT_IPS = "nodeport-ips"
CLUSTER_IPS = "cluster-ips"
NO_ENDPOINT_SERVICES = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS = "no-endpoint-nodeports"
REJECT_CHAIN = "reject-chain"
MARK_MASQ = "mark-for-masquerade"
MASQUERADING = "masquerading"
SERVICE_ENDPOINTS_CHECK = "service-endpoints-check"
NODEPORT_ENDPOINTS_CHECK = "nodeport-endpoints-check"
CLUSTER_IPS_CHECK = "cluster-ips-check"

MAPS = (SERVICE_IPS, SERVICE_NODEPORTS, NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS, CLUSTER_IPS)
"""Maps and sets whose elements belong to services."""

BASE_CHAINS = (
    ("filter-prerouting", "filter", "prerouting", -110),
    ("filter-input", "filter", "input", -110),
    ("filter-forward", "filter", "forward", -110),
    ("filter-output", "filter", "output", -110),
    ("filter-output-post-dnat", "filter", "output", -90),
    ("nat-prerouting", "nat", "prerouting", -100),
    ("nat-output", "nat", "output", -100),
    ("nat-postrouting", "nat", "postrouting", 100),
)
"""(name, type, hook, priority): kube-proxy names base chains `type-hook`."""

_ADDR_PROTO_PORT = "ipv4_addr . inet_proto . inet_service : verdict"
_PROTO_PORT = "inet_proto . inet_service : verdict"


def _snat(params: ProxyParams) -> str:
    return "masquerade" if params.snat_ip is None else f"snat to {params.snat_ip}"


def skeleton(params: ProxyParams) -> list[str]:
    """The table's fixed part: base chains, helper chains, maps and sets."""
    out = [f'add table {T} {{ comment "rules for kube-proxy" ; }}']
    for name, type_, hook, prio in BASE_CHAINS:
        out.append(f"add chain {T} {name} {{ type {type_} hook {hook} priority {prio} ; }}")
    for name in (
        SERVICES, SERVICE_ENDPOINTS_CHECK, NODEPORT_ENDPOINTS_CHECK, CLUSTER_IPS_CHECK,
        MARK_MASQ, MASQUERADING, REJECT_CHAIN,
    ):  # fmt: skip
        out.append(f"add chain {T} {name}")
    maps = (
        (SERVICE_IPS, _ADDR_PROTO_PORT, "ClusterIP, ExternalIP and LoadBalancer IP traffic"),
        (SERVICE_NODEPORTS, _PROTO_PORT, "NodePort traffic"),
        (NO_ENDPOINT_SERVICES, _ADDR_PROTO_PORT,
         "vmap to drop or reject packets to services with no endpoints"),
        (NO_ENDPOINT_NODEPORTS, _PROTO_PORT,
         "vmap to drop or reject packets to service nodeports with no endpoints"),
    )  # fmt: skip
    for name, type_, comment in maps:
        out.append(f'add map {T} {name} {{ type {type_} ; comment "{comment}" ; }}')
    out.append(f'add set {T} {CLUSTER_IPS} {{ type ipv4_addr ; comment "Active ClusterIPs" ; }}')
    out.append(
        f"add set {T} {NODEPORT_IPS}"
        ' { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }'
    )
    rule = f"add rule {T}"
    out += [
        f"{rule} filter-forward ct state new jump {SERVICE_ENDPOINTS_CHECK}",
        f"{rule} filter-forward ct state new jump {CLUSTER_IPS_CHECK}",
        f"{rule} filter-input ct state new jump {NODEPORT_ENDPOINTS_CHECK}",
        f"{rule} filter-input ct state new jump {SERVICE_ENDPOINTS_CHECK}",
        f"{rule} filter-output ct state new jump {SERVICE_ENDPOINTS_CHECK}",
        f"{rule} filter-output-post-dnat ct state new jump {CLUSTER_IPS_CHECK}",
        f"{rule} nat-prerouting jump {SERVICES}",
        f"{rule} nat-output jump {SERVICES}",
        f"{rule} nat-postrouting jump {MASQUERADING}",
        f"{rule} {MARK_MASQ} mark set mark or 0x4000",
        f"{rule} {MASQUERADING} mark and 0x4000 == 0 return",
        f"{rule} {MASQUERADING} mark set mark xor 0x4000",
        f"{rule} {MASQUERADING} {_snat(params)} fully-random",
        f"{rule} {REJECT_CHAIN} reject",
        f"{rule} {SERVICES} ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}",
        f"{rule} {SERVICES} ip daddr @{NODEPORT_IPS} meta l4proto . th dport"
        f" vmap @{SERVICE_NODEPORTS}",
        f"{rule} {SERVICE_ENDPOINTS_CHECK} ip daddr . meta l4proto . th dport"
        f" vmap @{NO_ENDPOINT_SERVICES}",
        f"{rule} {NODEPORT_ENDPOINTS_CHECK} ip daddr @{NODEPORT_IPS} meta l4proto . th dport"
        f" vmap @{NO_ENDPOINT_NODEPORTS}",
        f'{rule} {CLUSTER_IPS_CHECK} ip daddr @{CLUSTER_IPS} reject comment "Reject traffic to'
        ' invalid ports of ClusterIPs"',
    ]
    if params.service_cidr is not None:
        out.append(
            f"{rule} {CLUSTER_IPS_CHECK} ip daddr {{ {params.service_cidr} }} drop"
            ' comment "Drop traffic to unallocated ClusterIPs"'
        )
    if params.node_addresses:
        addrs = ", ".join(str(a) for a in sorted(params.node_addresses))
        out.append(f"add element {T} {NODEPORT_IPS} {{ {addrs} }}")
    return out


@dataclass
class ServiceObjects:
    """What one service port puts in the table."""

    chains: dict[str, list[str]] = field(default_factory=dict)
    """chain -> its rules (statement text, without `add rule ... chain`)."""
    sets: dict[str, str] = field(default_factory=dict)
    """affinity set -> its declaration body."""
    elements: dict[str, dict[str, str | None]] = field(
        default_factory=lambda: {m: {} for m in MAPS}
    )
    """map/set -> element key -> verdict (None for set elements)."""


def state_objects(ports: Iterable[ServicePort], params: ProxyParams) -> ServiceObjects:
    """The objects of a whole service (its ports share e.g. the ClusterIP element)."""
    out = ServiceObjects()
    for sp in ports:
        one = service_objects(sp, params)
        out.chains.update(one.chains)
        out.sets.update(one.sets)
        for m in MAPS:
            out.elements[m].update(one.elements[m])
    return out


def _block_verdict(block: NoEndpoints) -> str:
    return "drop" if block == "drop" else f"goto {REJECT_CHAIN}"


def service_objects(sp: ServicePort, params: ProxyParams) -> ServiceObjects:
    """Chains, sets and elements of one service port on the node `params` describes."""
    p = plan(sp, params.node)
    out = ServiceObjects()
    proto = sp.protocol.lower()
    svc, local = names.nft_service_chain(sp), names.nft_local_chain(sp)
    ext = names.nft_external_chain(sp)
    internal_chain = local if sp.internal_local else svc
    external_chain = local if sp.external_local else svc
    if sp.cluster_ip is not None:
        key = f"{sp.cluster_ip} . {proto} . {sp.port}"
        out.elements[CLUSTER_IPS][str(sp.cluster_ip)] = None
        if p.internal_block is None:
            out.elements[SERVICE_IPS][key] = f"goto {internal_chain}"
        else:
            out.elements[NO_ENDPOINT_SERVICES][key] = _block_verdict(p.internal_block)
    for ip in (*sp.external_ips, *sp.load_balancer_ips):
        key = f"{ip} . {proto} . {sp.port}"
        if p.external_block is None:
            out.elements[SERVICE_IPS][key] = f"goto {ext}"
        else:
            out.elements[NO_ENDPOINT_SERVICES][key] = _block_verdict(p.external_block)
    if sp.node_port:
        key = f"{proto} . {sp.node_port}"
        if p.external_block is None:
            out.elements[SERVICE_NODEPORTS][key] = f"goto {ext}"
        else:
            out.elements[NO_ENDPOINT_NODEPORTS][key] = _block_verdict(p.external_block)

    if sp.has_external and p.external_block is None:
        if not sp.external_local:
            out.chains[ext] = [f"jump {MARK_MASQ}", f"goto {svc}"]
        else:
            rules = []
            if p.uses_cluster_chain:
                if params.cluster_cidr is not None and params.masquerade_all:
                    # pylium: a same-node backend's reply would pass the node's conntrack.
                    rules.append(
                        f"ip saddr {params.cluster_cidr} jump {MARK_MASQ}"
                        ' comment "masquerade pod traffic"'
                    )
                if params.cluster_cidr is not None:
                    rules.append(
                        f'ip saddr {params.cluster_cidr} goto {svc} comment "short-circuit pod'
                        ' traffic"'
                    )
                rules += [
                    f'fib saddr type local jump {MARK_MASQ} comment "masquerade local traffic"',
                    f'fib saddr type local goto {svc} comment "short-circuit local traffic"',
                ]
            rules.append(f"goto {external_chain}")
            out.chains[ext] = rules
    if p.uses_cluster_chain:
        rules = []
        if sp.cluster_ip is not None and params.masquerade_all:
            rules.append(f"ip daddr {sp.cluster_ip} {proto} dport {sp.port} jump {MARK_MASQ}")
        elif sp.cluster_ip is not None and params.cluster_cidr is not None:
            rules.append(
                f"ip daddr {sp.cluster_ip} {proto} dport {sp.port}"
                f" ip saddr != {params.cluster_cidr} jump {MARK_MASQ}"
            )
        out.chains[svc] = rules + _balance(sp, p.cluster)
    if p.uses_local_chain:
        out.chains[local] = _balance(sp, p.local)
    for ep in p.chain_endpoints:
        chain = names.nft_endpoint_chain(sp, ep)
        rules = [f"ip saddr {ep.address} jump {MARK_MASQ}"]
        if sp.affinity_timeout:
            aff = names.nft_affinity_set(sp, ep)
            out.sets[aff] = (
                f"type ipv4_addr ; flags dynamic,timeout ; timeout {sp.affinity_timeout}s ;"
            )
            rules.append(f"update @{aff} {{ ip saddr }}")
        rules.append(f"meta l4proto {proto} dnat to {ep.addr_port}")
        out.chains[chain] = rules
    return out


def _balance(sp: ServicePort, endpoints: tuple[Endpoint, ...]) -> list[str]:
    rules = []
    if sp.affinity_timeout:
        for ep in endpoints:
            rules.append(
                f"ip saddr @{names.nft_affinity_set(sp, ep)}"
                f" goto {names.nft_endpoint_chain(sp, ep)}"
            )
    # pylium: kube-proxy picks with `numgen random mod N vmap { ... }`, but each such rule
    # makes an anonymous set, and creating a set in the kernel walks the table's sets: 18 of
    # the 19 s `nft -f` took for a full sync at 10 000 services. Rule i, reached when the
    # earlier ones did not match, takes its endpoint with probability 1/(N-i), as iptables'
    # statistic rules do: each endpoint gets 1/N, as with the vmap.
    n = len(endpoints)
    for i, ep in enumerate(endpoints):
        pick = f"numgen random mod {n - i} == 0 " if i < n - 1 else ""
        rules.append(f"{pick}goto {names.nft_endpoint_chain(sp, ep)}")
    return rules


def _element(map_name: str, key: str, verdict: str | None) -> str:
    body = key if verdict is None else f"{key} : {verdict}"
    return f"{map_name} {{ {body} }}"


def _write_objects(objs: ServiceObjects, out: list[str]) -> None:
    for name, body in objs.sets.items():
        out.append(f"add set {T} {name} {{ {body} }}")
    for chain in objs.chains:
        out.append(f"add chain {T} {chain}")
    for chain, rules in objs.chains.items():
        out += [f"add rule {T} {chain} {r}" for r in rules]


def _write_elements(objs: ServiceObjects, out: list[str]) -> None:
    for m in MAPS:
        for key, verdict in objs.elements[m].items():
            out.append(f"add element {T} {_element(m, key, verdict)}")


def full_sync(objects: Mapping[str, ServiceObjects], params: ProxyParams) -> str:
    """The whole table, rebuilt in one transaction (the table is deleted first, so nothing
    left from an unknown earlier state survives)."""
    out = [f"add table {T}", f"delete table {T}", *skeleton(params)]
    for name in sorted(objects):
        _write_objects(objects[name], out)
    for name in sorted(objects):
        _write_elements(objects[name], out)
    return "\n".join(out) + "\n"


def partial_sync(
    old: Mapping[str, ServiceObjects],
    new: Mapping[str, ServiceObjects],
    delete_now: Iterable[str] = (),
) -> tuple[str, set[str]]:
    """A transaction taking the changed services from `old` to `new` (absent: none).

    Returns the `nft -f` text and the chains/sets it flushed that the next sync must delete.
    `delete_now` are those of the previous sync (objects re-created since are kept).
    """
    out: list[str] = []
    recreated = {c for o in new.values() for c in (*o.chains, *o.sets)}
    for name in sorted(set(delete_now) - recreated):
        kind = "set" if name.startswith("affinity-") else "chain"
        out.append(f"delete {kind} {T} {name}")
    empty = ServiceObjects()
    stale: set[str] = set()
    keys = sorted(old.keys() | new.keys())
    for key in keys:  # elements first: they may refer to chains that change
        before, after = old.get(key, empty), new.get(key, empty)
        for m in MAPS:
            for k, v in before.elements[m].items():
                if after.elements[m].get(k, "\0") != v:
                    out.append(f"delete element {T} {m} {{ {k} }}")
    for key in keys:
        before, after = old.get(key, empty), new.get(key, empty)
        for name, body in after.sets.items():
            if before.sets.get(name) != body:
                out.append(f"add set {T} {name} {{ {body} }}")
        for chain in after.chains:
            out.append(f"add chain {T} {chain}")
            out.append(f"flush chain {T} {chain}")
        for chain, rules in after.chains.items():
            out += [f"add rule {T} {chain} {r}" for r in rules]
        for chain in before.chains.keys() - after.chains.keys():
            out.append(f"flush chain {T} {chain}")
            stale.add(chain)
        stale |= before.sets.keys() - after.sets.keys()
    for key in keys:
        before, after = old.get(key, empty), new.get(key, empty)
        for m in MAPS:
            for k, v in after.elements[m].items():
                if before.elements[m].get(k, "\0") != v:
                    out.append(f"add element {T} {_element(m, k, v)}")
    return "\n".join(out) + ("\n" if out else ""), stale
