"""Compute one endpoint's policy from the rules that select it, and decide a packet with it.

Semantics per direction:

- Enforcement mode `default`: the direction is enforced once any rule selects the endpoint
  for it; `always`: always enforced (default deny without any policy); `never`: nothing is.
- An enforced direction starts from deny-all when a selecting rule isolates (Kubernetes
  policies always do, Cilium's unless `enableDefaultDeny` says false); when only
  non-isolating rules select it, an allow-all entry keeps everything else open.
- Allow entries are a union; a deny entry wins over any allow it overlaps.
- Audit mode turns policy drops into AUDIT verdicts (passed, but reported).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from pylium.identity.labels import Labels
from pylium.policy.mapstate import (
    DROP_POLICY_DENIED,
    DROP_POLICY_DENY,
    PolicyEntry,
    PolicyKey,
    encode_entry,
    encode_key,
    port_range_prefixes,
)
from pylium.policy.rules import L4_ANY, PROTOCOLS, Direction, PortMatch, Rule
from pylium.policy.selector import Selector

ALLOW_ALL_LABEL = "(no default-deny policy selects the endpoint)"

NamedPorts = Mapping[str, frozenset[tuple[str, int]]]
"""Port name -> (protocol, port) pairs it stands for."""


class Enforcement(Enum):
    """Cilium's `policy-enforcement` modes."""

    DEFAULT = "default"
    ALWAYS = "always"
    NEVER = "never"


@dataclass(frozen=True)
class PolicyConfig:
    """Agent-wide policy settings."""

    enforcement: Enforcement = Enforcement.DEFAULT
    audit: bool = False
    """`policy-audit-mode`: report drops as AUDIT and let the packets pass."""


@dataclass(frozen=True)
class Decision:
    """The verdict of one direction for one packet."""

    verdict: str
    """`allowed`, `denied` or `audit`."""
    reason: str
    """`not-enforced`, `allow`, `deny` (a deny rule) or `default-deny` (nothing allowed)."""
    rules: tuple[str, ...] = ()
    """Labels of the rules that decided it (none for not-enforced / default-deny)."""
    drop_reason: int = 0

    @property
    def passes(self) -> bool:
        """Whether the packet goes through (AUDIT passes)."""
        return self.verdict != "denied"


PeerEntries = Mapping[PolicyKey, PolicyEntry]
"""One peer identity's entries of an endpoint policy, in dump order. Never changed once made:
endpoints whose rules are the same share them, and the datapath's writer skips a peer whose
entries are the very object it wrote last."""


@dataclass(frozen=True)
class EndpointPolicy:
    """An endpoint's computed policy: what the datapath's policy map must hold, per peer
    identity (0 = any), so that a change of some peers' selections replaces their entries
    alone (`recompute_peers`) and the datapath rewrites only those."""

    identity: int
    enforced: frozenset[Direction]
    by_peer: Mapping[int, PeerEntries] = field(default_factory=dict)
    audit: bool = False
    isolated_by: Mapping[Direction, tuple[str, ...]] = field(default_factory=dict)
    """Per direction, the rules that select the endpoint (named when default deny drops)."""

    @classmethod
    def from_entries(
        cls,
        identity: int,
        enforced: frozenset[Direction],
        entries: Mapping[PolicyKey, PolicyEntry],
        audit: bool = False,
    ) -> EndpointPolicy:
        """A policy of these entries (grouped by peer)."""
        return cls(identity, enforced, _group(entries), audit)

    @functools.cached_property
    def entries(self) -> dict[PolicyKey, PolicyEntry]:
        """Every entry, in dump order (direction, identity, protocol, port, prefix)."""
        flat = {k: e for peer in self.by_peer.values() for k, e in peer.items()}
        return dict(sorted(flat.items(), key=lambda item: item[0].sort_key))

    @property
    def size(self) -> int:
        """The number of entries (policy-map rows)."""
        return sum(len(peer) for peer in self.by_peer.values())

    def decide(
        self, direction: Direction, peer: int, protocol: str, port: int, cidr: int = 0
    ) -> Decision:
        """The verdict for a packet to/from `peer` (its identity) on protocol/port (for ICMP:
        the type), found as the datapath finds it: an LPM lookup for the peer, one for the
        CIDR class of the peer's address (`cidr`, 0 = none) and one for identity 0."""
        if direction not in self.enforced:
            return Decision("allowed", "not-enforced")
        number = PROTOCOLS[protocol]
        ids = (peer, cidr, 0) if cidr else (peer, 0)
        hits = [h for h in (self._lpm(direction, i, number, port) for i in ids) if h]
        denies = [e for e in hits if e.deny]
        if denies:
            rules = tuple(sorted(set().union(*(e.rules for e in denies))))
            return self._drop("deny", rules, DROP_POLICY_DENY)
        if hits:
            return Decision(
                "allowed", "allow", tuple(sorted(set().union(*(e.rules for e in hits))))
            )
        return self._drop("default-deny", self.isolated_by.get(direction, ()), DROP_POLICY_DENIED)

    def map_rows(self, cookie: Callable[[frozenset[str]], int] | None = None) -> dict[bytes, bytes]:
        """The endpoint's policy map as encoded key -> value (see `encode_rows`)."""
        return encode_rows(self.entries, cookie)

    def _drop(self, reason: str, rules: tuple[str, ...], code: int) -> Decision:
        return Decision("audit" if self.audit else "denied", reason, rules, code)

    def _lpm(
        self, direction: Direction, identity: int, protocol: int, port: int
    ) -> PolicyEntry | None:
        best: tuple[int, PolicyEntry] | None = None
        for key, entry in self.by_peer.get(identity, {}).items():
            if key.direction != direction:
                continue
            if key.protocol and (key.protocol != protocol or not key.port_matches(port)):
                continue
            if best is None or key.prefix_len > best[0]:
                best = (key.prefix_len, entry)
        return best[1] if best else None


def encode_rows(
    entries: Mapping[PolicyKey, PolicyEntry], cookie: Callable[[frozenset[str]], int] | None = None
) -> dict[bytes, bytes]:
    """Entries as policy-map rows, encoded key -> value: the desired state the datapath's
    reconciler job updates and prunes the pinned map against.

    Args:
        cookie: numbers a set of rule labels for verdict events (0 for all if None).
    """
    return {
        encode_key(k): encode_entry(k, e, cookie(e.rules) if cookie else 0)
        for k, e in entries.items()
    }


def compute(
    identity: int,
    labels: Labels,
    rules: list[Rule],
    select: Callable[[tuple[Selector, ...]], frozenset[int]],
    own_ports: NamedPorts,
    cluster_ports: NamedPorts,
    config: PolicyConfig,
) -> EndpointPolicy:
    """The policy of an endpoint with this identity and these labels.

    Args:
        rules: every rule of the repository (those whose subject selects the labels count).
        select: identities the union of some peer selectors selects (the selector cache).
        own_ports: the endpoint's named ports (ingress rules name the subject's own ports).
        cluster_ports: every endpoint's named ports (egress rules name the peer's; Cilium
            resolves them against all endpoints, so a name two pods map differently opens
            both ports).
    """
    if config.enforcement is Enforcement.NEVER:
        return EndpointPolicy(identity, frozenset())
    entries: dict[PolicyKey, PolicyEntry] = {}
    enforced: set[Direction] = set()
    isolated_by: dict[Direction, tuple[str, ...]] = {}
    for direction in Direction:
        selecting = [r for r in rules if r.direction == direction and r.subject.matches(labels)]
        if selecting or config.enforcement is Enforcement.ALWAYS:
            enforced.add(direction)
        isolated_by[direction] = tuple(sorted({r.label for r in selecting if r.isolates}))
        if selecting and not isolated_by[direction] and config.enforcement is Enforcement.DEFAULT:
            _add(entries, PolicyKey(direction, 0, 0), False, ALLOW_ALL_LABEL)
        ports = own_ports if direction is Direction.INGRESS else cluster_ports
        for rule in selecting:
            if not rule.peers:
                continue
            wildcard = any(p.is_wildcard for p in rule.peers)
            _add_rule(entries, rule, frozenset([0]) if wildcard else select(rule.peers), ports)
    return EndpointPolicy(
        identity, frozenset(enforced), _group(_drop_shadowed(entries)), config.audit, isolated_by
    )


def recompute_peers(
    policy: EndpointPolicy,
    peers: frozenset[int],
    rules: list[Rule],
    select: Callable[[tuple[Selector, ...]], frozenset[int]],
    own_ports: NamedPorts,
    cluster_ports: NamedPorts,
) -> EndpointPolicy:
    """`policy` with the entries of the peer identities `peers` derived again: what `compute`
    returns when only the selections of those identities changed (an identity appeared or
    went), at the cost of those peers' entries alone; `policy` itself
    when they came out the same. `rules` are the rules whose subject selects the endpoint.

    Exact because an entry of identity X is only shadowed by denies of X or of identity 0,
    and identity-0 entries come from wildcard peers, which selections never change.
    """
    if not policy.enforced or not peers:
        return policy
    fresh: dict[PolicyKey, PolicyEntry] = {}
    for direction in policy.enforced:
        ports = own_ports if direction is Direction.INGRESS else cluster_ports
        for rule in rules:
            if rule.direction != direction or not rule.peers:
                continue
            if any(p.is_wildcard for p in rule.peers):
                continue
            hit = select(rule.peers) & peers
            if hit:
                _add_rule(fresh, rule, hit, ports)
    if fresh:
        shadowed = _drop_shadowed({**policy.by_peer.get(0, {}), **fresh})
        fresh = {k: e for k, e in shadowed.items() if k.identity}
    grouped = _group(fresh)
    moved = [p for p in peers if grouped.get(p) != policy.by_peer.get(p)]
    if not moved:
        return policy
    by_peer = dict(policy.by_peer)
    for peer in moved:
        if peer in grouped:
            by_peer[peer] = grouped[peer]
        else:
            del by_peer[peer]
    return EndpointPolicy(
        policy.identity, policy.enforced, by_peer, policy.audit, policy.isolated_by
    )


def _group(entries: Mapping[PolicyKey, PolicyEntry]) -> dict[int, dict[PolicyKey, PolicyEntry]]:
    """Entries by peer identity, keeping their order."""
    out: dict[int, dict[PolicyKey, PolicyEntry]] = {}
    for key, entry in entries.items():
        out.setdefault(key.identity, {})[key] = entry
    return out


def _add_rule(
    entries: dict[PolicyKey, PolicyEntry], rule: Rule, peers: frozenset[int], ports: NamedPorts
) -> None:
    """The keys of one rule for these peer identities."""
    label, direction, deny = rule.label, rule.direction, rule.deny
    for protocol, first, last in _port_ranges(rule.ports, ports):
        blocks = port_range_prefixes(first, last) if protocol else [(0, 0)]
        for peer in peers:
            for port, prefix in blocks:
                _add(entries, PolicyKey(direction, peer, protocol, port, prefix), deny, label)


def _add(entries: dict[PolicyKey, PolicyEntry], key: PolicyKey, deny: bool, label: str) -> None:
    old = entries.get(key)
    if old is None or (deny and not old.deny):
        entries[key] = PolicyEntry(deny, frozenset([label]))
    elif old.deny == deny:
        entries[key] = PolicyEntry(deny, old.rules | {label})


def _drop_shadowed(entries: dict[PolicyKey, PolicyEntry]) -> dict[PolicyKey, PolicyEntry]:
    """Leave out allows a deny covers (deny precedence survives the per-identity LPM)."""
    # A deny covers only keys of its own identity or, with identity 0, every identity.
    denies: dict[tuple[Direction, int], list[PolicyKey]] = {}
    for k, e in entries.items():
        if e.deny:
            denies.setdefault((k.direction, k.identity), []).append(k)
    return {
        k: e
        for k, e in sorted(entries.items(), key=lambda item: item[0].sort_key)
        if e.deny
        or not any(
            d.covers(k)
            for d in (*denies.get((k.direction, 0), ()), *denies.get((k.direction, k.identity), ()))
        )
    }


def _port_ranges(matches: tuple[PortMatch, ...], named: NamedPorts) -> list[tuple[int, int, int]]:
    """(protocol number, first, last) per match; (0, 0, 0) = any protocol and port."""
    out: list[tuple[int, int, int]] = []
    for m in matches:
        if m.protocol == "ANY" and not m.port and not m.name:
            out.append((0, 0, 0))
            continue
        protocols = L4_ANY if m.protocol == "ANY" else (m.protocol,)
        if m.name:
            out += [
                (PROTOCOLS[proto], port, port)
                for proto, port in sorted(named.get(m.name, frozenset()))
                if proto in protocols
            ]
            continue
        first = m.port
        last = m.end_port or m.port
        if not first:
            first, last = 0, 0xFFFF
        out += [(PROTOCOLS[proto], first, last) for proto in protocols]
    return out
