"""Service rules as `iptables-restore --noflush` input, laid out as kube-proxy's iptables mode.

nat table: `KUBE-SERVICES` matches ClusterIP/external/LB destinations and jumps to the
service's policy chain (`KUBE-SVC-` cluster, `KUBE-SVL-` local) or to `KUBE-EXT-` for external
traffic; its last rule sends node-local destinations to `KUBE-NODEPORTS`. A policy chain picks
an endpoint with `statistic --mode random --probability 1/(n-i)` splits (session affinity first
tries `recent --rcheck` per endpoint) and jumps to `KUBE-SEP-`, which marks hairpin traffic for
masquerade and DNATs. `KUBE-MARK-MASQ` sets mark 0x4000; `KUBE-POSTROUTING` masquerades what
carries it (or SNATs it to `ProxyParams.snat_ip`). filter table: services without endpoints are
rejected (or dropped: Local policy, endpoints elsewhere) in `KUBE-SERVICES` and
`KUBE-EXTERNAL-SERVICES`.

A partial sync rewrites the dispatch chains whole (declaring a chain in restore input flushes it)
but only the changed services' own chains; chains that went away are declared and deleted
(`-X`). `jump_rules()` are the rules from the built-in chains, ensured once by the applier.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pylium.loadbalancer.kubeproxy import names
from pylium.loadbalancer.kubeproxy.params import ProxyParams
from pylium.loadbalancer.kubeproxy.plan import PortPlan, plan
from pylium.loadbalancer.model import Endpoint, ServicePort

MASQ_MARK = "0x4000"
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_POSTROUTING = "KUBE-POSTROUTING"

FILTER_CHAINS = (KUBE_NODEPORTS, KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD)
NAT_CHAINS = (KUBE_NODEPORTS, KUBE_SERVICES, KUBE_MARK_MASQ, KUBE_POSTROUTING)

JumpRule = tuple[str, str, tuple[str, ...]]
"""(table, built-in chain, rule arguments)."""


def jump_rules() -> list[JumpRule]:
    """Rules from the built-in chains into kube-proxy's (kube-proxy's iptablesJumpChains)."""
    new = ("-m", "conntrack", "--ctstate", "NEW")
    portals = ("-m", "comment", "--comment", "kubernetes service portals")
    external = ("-m", "comment", "--comment", "kubernetes externally-visible service portals")
    return [
        ("filter", "INPUT", (*new, *external, "-j", KUBE_EXTERNAL_SERVICES)),
        ("filter", "FORWARD", (*new, *external, "-j", KUBE_EXTERNAL_SERVICES)),
        ("filter", "FORWARD", (*new, *portals, "-j", KUBE_SERVICES)),
        ("filter", "OUTPUT", (*new, *portals, "-j", KUBE_SERVICES)),
        (
            "filter",
            "FORWARD",
            ("-m", "comment", "--comment", "kubernetes forwarding rules", "-j", KUBE_FORWARD),
        ),
        ("nat", "OUTPUT", (*portals, "-j", KUBE_SERVICES)),
        ("nat", "PREROUTING", (*portals, "-j", KUBE_SERVICES)),
        (
            "nat",
            "POSTROUTING",
            ("-m", "comment", "--comment", "kubernetes postrouting rules", "-j", KUBE_POSTROUTING),
        ),
    ]


def _q(text: str) -> str:
    return f'"{text}"' if " " in text else text


def _snat(params: ProxyParams) -> tuple[str, ...]:
    if params.snat_ip is None:
        return ("-j", "MASQUERADE")
    return ("-j", "SNAT", "--to-source", str(params.snat_ip))


def _rule(chain: str, *args: str) -> str:
    return " ".join(("-A", chain, *args))


@dataclass
class PortRules:
    """The rules one service port contributes."""

    filter_services: list[str] = field(default_factory=list)
    filter_external: list[str] = field(default_factory=list)
    nat_services: list[str] = field(default_factory=list)
    nat_nodeports: list[str] = field(default_factory=list)
    chains: dict[str, list[str]] = field(default_factory=dict)
    """The port's own nat chains, in order of declaration."""


def port_rules(sp: ServicePort, params: ProxyParams) -> PortRules:
    """Every rule of one service port on the node `params` describes."""
    p = plan(sp, params.node)
    out = PortRules()
    name, proto = sp.port_name, sp.protocol.lower()
    match = ("-m", proto, "-p", proto)
    svc, svl, ext = names.svc_chain(sp), names.svl_chain(sp), names.ext_chain(sp)
    internal_chain = svl if sp.internal_local else svc
    external_chain = svl if sp.external_local else svc
    cip = str(sp.cluster_ip) if sp.cluster_ip is not None else None

    def filter_rule(chain: str, block: str, dest: tuple[str, ...]) -> str:
        comment = (
            f"{name} has no local endpoints" if block == "drop" else f"{name} has no endpoints"
        )
        target = "DROP" if block == "drop" else "REJECT"
        return _rule(chain, "-m", "comment", "--comment", _q(comment), *dest, "-j", target)

    if cip is not None:
        dest = (*match, "-d", cip, "--dport", str(sp.port))
        if p.internal_block is None:
            out.nat_services.append(
                _rule(KUBE_SERVICES, "-m", "comment", "--comment", _q(f"{name} cluster IP"),
                      *dest, "-j", internal_chain)
            )  # fmt: skip
        else:
            out.filter_services.append(filter_rule(KUBE_SERVICES, p.internal_block, dest))
    externals = [(ip, "external IP") for ip in sp.external_ips]
    externals += [(ip, "loadbalancer IP") for ip in sp.load_balancer_ips]
    for ip, what in externals:
        dest = (*match, "-d", str(ip), "--dport", str(sp.port))
        if p.external_block is None:
            out.nat_services.append(
                _rule(KUBE_SERVICES, "-m", "comment", "--comment", _q(f"{name} {what}"),
                      *dest, "-j", ext)
            )  # fmt: skip
        else:
            out.filter_external.append(filter_rule(KUBE_EXTERNAL_SERVICES, p.external_block, dest))
    if sp.node_port:
        port_match = (*match, "--dport", str(sp.node_port))
        if p.external_block is None:
            out.nat_nodeports.append(
                _rule(KUBE_NODEPORTS, "-m", "comment", "--comment", _q(name), *port_match,
                      "-j", ext)
            )  # fmt: skip
        else:
            local_dst = ("-m", "addrtype", "--dst-type", "LOCAL", *port_match)
            out.filter_external.append(
                filter_rule(KUBE_EXTERNAL_SERVICES, p.external_block, local_dst)
            )

    if sp.has_external and p.external_block is None:
        out.chains[ext] = _ext_rules(sp, p, params, ext, svc, external_chain)
    if p.uses_cluster_chain:
        rules = []
        if cip is not None and (params.masquerade_all or params.cluster_cidr is not None):
            src = () if params.masquerade_all else ("!", "-s", str(params.cluster_cidr))
            rules.append(
                _rule(svc, "-m", "comment", "--comment", _q(f"{name} cluster IP"), *match,
                      "-d", cip, "--dport", str(sp.port), *src, "-j", KUBE_MARK_MASQ)
            )  # fmt: skip
        out.chains[svc] = rules + _balance(sp, svc, p.cluster)
    if p.uses_local_chain:
        out.chains[svl] = _balance(sp, svl, p.local)
    for ep in p.chain_endpoints:
        sep = names.sep_chain(sp, ep)
        affinity = ("-m", "recent", "--name", sep, "--set") if sp.affinity_timeout else ()
        out.chains[sep] = [
            _rule(sep, "-m", "comment", "--comment", _q(name), "-s", str(ep.address),
                  "-j", KUBE_MARK_MASQ),
            _rule(sep, "-m", "comment", "--comment", _q(name), *affinity, *match,
                  "-j", "DNAT", "--to-destination", ep.addr_port),
        ]  # fmt: skip
    return out


def _ext_rules(
    sp: ServicePort, p: PortPlan, params: ProxyParams, ext: str, svc: str, target: str
) -> list[str]:
    name = sp.port_name
    if not sp.external_local:
        comment = _q(f"masquerade traffic for {name} external destinations")
        return [
            _rule(ext, "-m", "comment", "--comment", comment, "-j", KUBE_MARK_MASQ),
            _rule(ext, "-j", svc),
        ]
    rules = []
    if p.uses_cluster_chain:
        if params.cluster_cidr is not None and params.masquerade_all:
            # pylium: a same-node backend's reply would pass the node's conntrack otherwise.
            rules.append(
                _rule(ext, "-m", "comment", "--comment",
                      _q(f"masquerade pod traffic for {name} external destinations"),
                      "-s", str(params.cluster_cidr), "-j", KUBE_MARK_MASQ)
            )  # fmt: skip
        if params.cluster_cidr is not None:
            rules.append(
                _rule(ext, "-m", "comment", "--comment",
                      _q(f"pod traffic for {name} external destinations"),
                      "-s", str(params.cluster_cidr), "-j", svc)
            )  # fmt: skip
        rules += [
            _rule(ext, "-m", "comment", "--comment",
                  _q(f"masquerade LOCAL traffic for {name} external destinations"),
                  "-m", "addrtype", "--src-type", "LOCAL", "-j", KUBE_MARK_MASQ),
            _rule(ext, "-m", "comment", "--comment",
                  _q(f"route LOCAL traffic for {name} external destinations"),
                  "-m", "addrtype", "--src-type", "LOCAL", "-j", svc),
        ]  # fmt: skip
    rules.append(_rule(ext, "-j", target))
    return rules


def _balance(sp: ServicePort, chain: str, endpoints: Sequence[Endpoint]) -> list[str]:
    """Affinity checks, then the probability splits over `endpoints`."""
    name = sp.port_name
    rules = []
    if sp.affinity_timeout:
        for ep in endpoints:
            sep = names.sep_chain(sp, ep)
            rules.append(
                _rule(chain, "-m", "comment", "--comment", _q(f"{name} -> {ep.addr_port}"),
                      "-m", "recent", "--name", sep, "--mask", "255.255.255.255", "--rcheck",
                      "--seconds", str(sp.affinity_timeout), "--reap", "-j", sep)
            )  # fmt: skip
    n = len(endpoints)
    for i, ep in enumerate(endpoints):
        stat: tuple[str, ...] = ()
        if i < n - 1:
            stat = ("-m", "statistic", "--mode", "random", "--probability", f"{1 / (n - i):.10f}")
        rules.append(
            _rule(chain, "-m", "comment", "--comment", _q(f"{name} -> {ep.addr_port}"), *stat,
                  "-j", names.sep_chain(sp, ep))
        )  # fmt: skip
    return rules


def restore_input(
    ports: Iterable[ServicePort],
    params: ProxyParams,
    changed: set[str] | None = None,
    stale_chains: Iterable[str] = (),
) -> str:
    """`iptables-restore --noflush` input.

    Args:
        ports: every service port of the node.
        params: the node's settings.
        changed: port names (`ServicePort.port_name`) whose own chains to write; None: all
            (a full sync).
        stale_chains: chains to delete (they belonged to services or endpoints now gone).
    """
    rules = sorted(((sp.port_name, sp.protocol), port_rules(sp, params)) for sp in ports)
    flt = ["*filter", *(f":{c} - [0:0]" for c in FILTER_CHAINS)]
    for _, r in rules:
        flt += r.filter_services
    for _, r in rules:
        flt += r.filter_external
    if not params.conntrack_tcp_be_liberal:
        flt.append(_rule(KUBE_FORWARD, "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"))
    flt += [
        _rule(KUBE_FORWARD, "-m", "comment", "--comment", _q("kubernetes forwarding rules"),
              "-m", "mark", "--mark", f"{MASQ_MARK}/{MASQ_MARK}", "-j", "ACCEPT"),
        _rule(KUBE_FORWARD, "-m", "comment", "--comment",
              _q("kubernetes forwarding conntrack rule"),
              "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"),
        "COMMIT",
    ]  # fmt: skip
    written = [(n, r) for (n, _), r in rules if changed is None or n in changed]
    own = [c for _, r in written for c in r.chains]
    stale = sorted(set(stale_chains) - set(own))
    nat = ["*nat", *(f":{c} - [0:0]" for c in (*NAT_CHAINS, *own, *stale))]
    nat += [
        _rule(KUBE_POSTROUTING, "-m", "mark", "!", "--mark", f"{MASQ_MARK}/{MASQ_MARK}",
              "-j", "RETURN"),
        _rule(KUBE_POSTROUTING, "-j", "MARK", "--xor-mark", MASQ_MARK),
        _rule(KUBE_POSTROUTING, "-m", "comment", "--comment",
              _q("kubernetes service traffic requiring SNAT"), *_snat(params), "--random-fully"),
        _rule(KUBE_MARK_MASQ, "-j", "MARK", "--or-mark", MASQ_MARK),
    ]  # fmt: skip
    for _, r in rules:
        nat += r.nat_services
    nat.append(
        _rule(KUBE_SERVICES, "-m", "comment", "--comment",
              _q("kubernetes service nodeports; NOTE: this must be the last rule in this chain"),
              "-m", "addrtype", "--dst-type", "LOCAL", "-j", KUBE_NODEPORTS)
    )  # fmt: skip
    for _, r in rules:
        nat += r.nat_nodeports
    for _, r in written:
        for chain_rules in r.chains.values():
            nat += chain_rules
    nat += [f"-X {c}" for c in stale]
    nat.append("COMMIT")
    return "\n".join([*flt, *nat]) + "\n"


def chains_of(sp: ServicePort, params: ProxyParams) -> set[str]:
    """The nat chains a service port owns (to find stale ones after a change)."""
    return set(port_rules(sp, params).chains)
