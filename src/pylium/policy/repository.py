"""The policy repository: namespaces, pods and policies in; per-endpoint policies out.

It mirrors what the agent learns from the store. Pods and namespaces give endpoints their
identities (Cilium's pod labels through the identity label filter); each identity that appears
or vanishes goes through the selector cache, which updates its selections incrementally.
Policies become rules; each prefix their CIDR peers name gets two CIDR class identities
(`cidr_classes`: for peers outside the cluster and for in-cluster ones, bpf/lib/policy.h).
After each change the endpoints' policies are recomputed and subscribers hear which
endpoints' policies changed: the datapath step's reconciler job writes those into the
endpoints' policy maps.

Identity numbers come from a `Numbering`: in the agent, the identity allocator (its cache
knows cluster-wide ids; CIDR labels give node-local ids); here `IdentityNumbers`, seeded with
the store's CiliumIdentity objects (the CLI) or empty (the pure model).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pylium.identity.filter import LabelFilter
from pylium.identity.labels import SOURCE_CIDR, Labels, pod_labels
from pylium.identity.numeric import (
    IDENTITY_UNKNOWN,
    MIN_CLUSTER_IDENTITY,
    MIN_LOCAL_IDENTITY,
    RESERVED_NAMES,
    reserved_identity,
    reserved_labels,
)
from pylium.policy.compute import (
    EndpointPolicy,
    NamedPorts,
    PolicyConfig,
    compute,
    recompute_peers,
)
from pylium.policy.rules import KINDS, PolicyRef, Rule, policy_ref, rules_of
from pylium.policy.selector import (
    Address,
    CIDRSelector,
    Network,
    Selector,
    cidr_class_labels,
    is_outside,
)
from pylium.policy.selectorcache import SelectionChange, SelectorCache

Object = Mapping[str, Any]


class Numbering(Protocol):
    """Where identity numbers come from."""

    def number(self, labels: Labels) -> int:
        """The identity of a label set (reserved, cluster-wide, or node-local for `cidr:`)."""
        ...


class IdentityNumbers:
    """Numbers for label sets: reserved ids, known cluster-wide ids, else the next free one
    (cluster-wide from 256, node-local CIDR ids from 1 << 24 | 1)."""

    def __init__(self, known: Mapping[int, Labels] | None = None) -> None:
        self._by_labels = {labels: number for number, labels in (known or {}).items()}
        self._next_cluster = max([MIN_CLUSTER_IDENTITY - 1, *self._by_labels.values()]) + 1
        self._next_local = MIN_LOCAL_IDENTITY

    def number(self, labels: Labels) -> int:
        """The identity of a label set, numbered on first sight."""
        reserved = reserved_identity(labels)
        if reserved is not None:
            return reserved
        found = self._by_labels.get(labels)
        if found is None:
            if labels.has_source(SOURCE_CIDR):
                found, self._next_local = self._next_local, self._next_local + 1
            else:
                found, self._next_cluster = self._next_cluster, self._next_cluster + 1
            self._by_labels[labels] = found
        return found


@dataclass(frozen=True)
class Endpoint:
    """A pod as the policy engine sees it."""

    key: str
    """`namespace/name`."""
    identity: int
    labels: Labels
    ips: frozenset[Address]
    ports: NamedPorts
    node: str = ""
    """The node the pod is scheduled on (`spec.nodeName`)."""


Listener = Callable[[dict[str, EndpointPolicy]], None]
Group = tuple[tuple[int, ...], frozenset[tuple[str, frozenset[tuple[str, int]]]]]
"""Endpoints with the same selecting rules (by object) and named ports: the same entries."""


class Repository:
    """Policies and endpoints; computes each endpoint's policy.

    Args:
        config: enforcement mode and audit flag.
        numbers: identity numbering (a fresh local one by default).
        label_filter: which pod labels are identity-relevant.
        node: compute the policies of this node's pods only (an agent's: the others are peers,
            known to the selector cache), and of any other endpoint `policy()` is asked for;
            None computes every endpoint's.
    """

    def __init__(
        self,
        config: PolicyConfig | None = None,
        numbers: Numbering | None = None,
        label_filter: LabelFilter | None = None,
        node: str | None = None,
    ) -> None:
        self.config = config or PolicyConfig()
        self._node = node
        self._asked: set[str] = set()
        """Endpoints of other nodes whose policy was asked for (kept computed from then on)."""
        self.selectors = SelectorCache()
        self._numbers: Numbering = numbers or IdentityNumbers()
        self._filter = label_filter or LabelFilter()
        self._namespaces: dict[str, Object] = {}
        self._pods: dict[str, Object] = {}
        self._endpoints: dict[str, Endpoint] = {}
        self._policies: dict[PolicyRef, list[Rule]] = {}
        self._cidr_refs: dict[Network, int] = {}
        """Users of each CIDR rule prefix (its two CIDR classes exist while it has any)."""
        self._computed: dict[str, EndpointPolicy] = {}
        self._listeners: list[Listener] = []
        self._selecting: dict[Labels, list[Rule]] = {}
        """Rules whose subject selects a label set (cleared when rules change)."""
        self._cluster_ports: NamedPorts = {}
        self._moved_peers: set[int] = set()
        self._moved_selectors: set[Selector] = set()
        """Identities and selectors whose selections changed since the last recompute."""
        self._batching = False
        self._pending: set[str] | None = set()
        """Endpoints to compute at the end of a batch (None: all)."""
        self.revision = 0
        for number in RESERVED_NAMES:
            if number != IDENTITY_UNKNOWN:
                self.selectors.upsert_identity(number, reserved_labels(number))
        self.selectors.subscribe(self._selections_changed)

    # --- inputs ------------------------------------------------------------------------------

    def set_namespace(self, namespace: Object) -> None:
        """Add or update a Namespace (its labels reach every pod of it)."""
        self._namespaces[namespace["metadata"]["name"]] = namespace
        self._refresh_pods(namespace["metadata"]["name"])

    def delete_namespace(self, name: str) -> None:
        """Remove a Namespace and, as the API server does, its pods and policies."""
        self._namespaces.pop(name, None)
        for key in [k for k in self._pods if k.startswith(name + "/")]:
            self._pods.pop(key)
        dropped: list[Rule] = []
        for ref in [r for r in self._policies if r.namespace == name]:
            dropped += self._drop_rules(ref)
        self._refresh_pods(name, self._subjects_of(dropped))

    def set_pod(self, pod: Object) -> None:
        """Add or update a Pod."""
        meta = pod["metadata"]
        key = f"{meta.get('namespace') or 'default'}/{meta['name']}"
        self._pods[key] = pod
        self._refresh_pods(key.partition("/")[0], only=key)

    def delete_pod(self, namespace: str, name: str) -> None:
        """Remove a Pod."""
        key = f"{namespace}/{name}"
        self._pods.pop(key, None)
        self._refresh_pods(namespace, only=key)

    def set_policy(self, policy: Object) -> None:
        """Add or replace a (validated) policy object."""
        rules = rules_of(policy)
        ref = policy_ref(policy)
        dropped = self._drop_rules(ref)
        self._policies[ref] = rules
        for rule in rules:
            for selector in rule.peers:
                self._use_selector(selector)
        self._recompute(self._subjects_of(dropped, rules))

    def delete_policy(self, kind: str, namespace: str, name: str) -> None:
        """Remove a policy."""
        self._recompute(self._subjects_of(self._drop_rules(PolicyRef(kind, namespace, name))))

    def refresh(self) -> None:
        """Re-derive the endpoints whose label set the numbering now numbers differently
        (it learned identities it did not know)."""
        stale = [
            k for k, ep in self._endpoints.items() if self._numbers.number(ep.labels) != ep.identity
        ]
        with self.batch():
            for key in stale:
                self._refresh_pods(key.partition("/")[0], only=key)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Apply many changes and compute the endpoints they touch once at the end (a first
        load computes every endpoint once), not after each change."""
        self._batching = True
        try:
            yield
        finally:
            self._batching = False
            pending, self._pending = self._pending, set()
            self._recompute(pending)

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` with {endpoint key: new policy} whenever endpoint policies change
        (a deleted endpoint is absent from `endpoints()` when it is called)."""
        self._listeners.append(listener)

    # --- outputs -----------------------------------------------------------------------------

    def endpoints(self) -> dict[str, Endpoint]:
        """Every endpoint by `namespace/name`."""
        return dict(self._endpoints)

    def policy(self, key: str) -> EndpointPolicy:
        """The computed policy of an endpoint (KeyError if unknown). An endpoint of another
        node is computed now and kept up to date from then on."""
        found = self._computed.get(key)
        if found is None:
            ep = self._endpoints[key]
            self._asked.add(key)
            found = self._computed[key] = self._compute(ep, self._select, self._cluster_ports)
        return found

    def rules(self) -> dict[PolicyRef, list[Rule]]:
        """The rules of every policy."""
        return {ref: list(rules) for ref, rules in self._policies.items()}

    def cidr_classes(self) -> dict[Network, tuple[int, int]]:
        """Every CIDR rule prefix -> its (outside, in-cluster) class identities: what the
        datapath's `pylium_policy_cidr` map holds."""
        return {
            prefix: (self._numbers.number(outside), self._numbers.number(inside))
            for prefix in self._cidr_refs
            for outside, inside in [cidr_class_labels(prefix)]
        }

    def cidr_class(self, address: Address, peer: int) -> int:
        """The CIDR class identity of a peer's address as the datapath finds it: the longest
        rule prefix holding it, its class for a peer with identity `peer` (0 = none)."""
        held = [p for p in self._cidr_refs if p.version == address.version and address in p]
        if not held:
            return 0
        outside, inside = cidr_class_labels(max(held, key=lambda p: p.prefixlen))
        return self._numbers.number(outside if is_outside(peer) else inside)

    def selected_endpoints(self, ref: PolicyRef) -> list[str]:
        """Endpoints any rule of a policy applies to."""
        rules = self._policies.get(ref, [])
        return sorted(
            k
            for k, ep in self._endpoints.items()
            if any(r.subject.matches(ep.labels) for r in rules)
        )

    # --- internals ---------------------------------------------------------------------------

    def _drop_rules(self, ref: PolicyRef) -> list[Rule]:
        rules = self._policies.pop(ref, [])
        for rule in rules:
            for selector in rule.peers:
                self._release_selector(selector)
        return rules

    def _subjects_of(self, dropped: list[Rule], added: Sequence[Rule] = ()) -> set[str]:
        """Endpoints some of these rules select (their policies need computing anew); keeps
        the per-label-set rule lists in step."""
        gone = {id(r) for r in dropped}
        moved: set[Labels] = set()
        for labels, rules in self._selecting.items():
            kept = [r for r in rules if id(r) not in gone]
            new = [r for r in added if r.subject.matches(labels)]
            if new or len(kept) != len(rules):
                self._selecting[labels] = kept + new
                moved.add(labels)
        return {k for k, ep in self._endpoints.items() if ep.labels in moved}

    def _selecting_rules(self, ep: Endpoint) -> list[Rule]:
        found = self._selecting.get(ep.labels)
        if found is None:
            # a namespaced policy selects pods of its namespace only (its labels hold it)
            namespace = ep.key.partition("/")[0]
            candidates = (
                r
                for ref, rules in self._policies.items()
                if ref.namespace in ("", namespace)
                for r in rules
            )
            found = [r for r in candidates if r.subject.matches(ep.labels)]
            self._selecting[ep.labels] = found
        return found

    def _selections_changed(self, changes: list[SelectionChange]) -> None:
        for change in changes:
            self._moved_selectors.add(change.selector)
            self._moved_peers.update(change.added | change.removed)

    def _use_selector(self, selector: Selector) -> None:
        self.selectors.add_user(selector)
        if isinstance(selector, CIDRSelector):
            prefix = selector.prefix
            self._cidr_refs[prefix] = self._cidr_refs.get(prefix, 0) + 1
            if self._cidr_refs[prefix] == 1:
                for labels in cidr_class_labels(prefix):
                    self.selectors.upsert_identity(self._numbers.number(labels), labels)

    def _release_selector(self, selector: Selector) -> None:
        self.selectors.remove_user(selector)
        if isinstance(selector, CIDRSelector):
            prefix = selector.prefix
            self._cidr_refs[prefix] -= 1
            if not self._cidr_refs[prefix]:
                del self._cidr_refs[prefix]
                for labels in cidr_class_labels(prefix):
                    self.selectors.remove_identity(self._numbers.number(labels))

    def _refresh_pods(
        self, namespace: str, dirty: set[str] | None = None, only: str | None = None
    ) -> None:
        """Re-derive the endpoints of one namespace (or the one pod `only` of it) and push
        identity changes; recompute the endpoints that changed, those in `dirty`, and those
        whose peers' selections moved."""
        dirty = set(dirty or ())

        def chosen(key: str) -> bool:
            return key == only if only else key.startswith(namespace + "/")

        old = {k: self._endpoints.pop(k) for k in list(self._endpoints) if chosen(k)}
        ns_obj = self._namespaces.get(namespace)
        for key in [only] if only else list(self._pods):
            pod = self._pods.get(key)
            if pod is not None and chosen(key):
                self._endpoints[key] = self._endpoint(key, pod, ns_obj)
                if old.get(key) != self._endpoints[key]:
                    dirty.add(key)
        # only identities of these endpoints (before or now) can have changed
        touched = {ep.identity for ep in old.values()} | {
            self._endpoints[k].identity for k in dirty if k in self._endpoints
        }
        live = {ep.identity: ep.labels for ep in self._endpoints.values() if ep.identity in touched}
        for number in touched - live.keys():
            self.selectors.remove_identity(number)
        for number, labels in live.items():
            self.selectors.upsert_identity(number, labels)
        self._recompute(dirty)

    def _endpoint(self, key: str, pod: Object, namespace: Object | None) -> Endpoint:
        labels = self._filter.identity_labels(pod_labels(pod, namespace))
        status = pod.get("status") or {}
        texts = [p["ip"] for p in status.get("podIPs") or []] or (
            [status["podIP"]] if status.get("podIP") else []
        )
        ports: dict[str, set[tuple[str, int]]] = {}
        for container in (pod.get("spec") or {}).get("containers") or []:
            for p in container.get("ports") or []:
                if p.get("name"):
                    ports.setdefault(p["name"], set()).add(
                        (p.get("protocol") or "TCP", p["containerPort"])
                    )
        return Endpoint(
            key,
            self._numbers.number(labels),
            labels,
            frozenset(ipaddress.ip_address(t) for t in texts),
            {name: frozenset(v) for name, v in ports.items()},
            (pod.get("spec") or {}).get("nodeName") or "",
        )

    def _recompute(self, dirty: set[str] | None) -> None:
        """Compute anew the policies of the endpoints in `dirty` (None: all), and re-derive
        the entries of peers whose selections moved in the endpoints whose rules use the
        moved selectors; the rest keep their policies. Endpoints with the same selecting rules
        and named ports get the same entries: each such group is computed once."""
        self.revision += 1
        if self._batching:  # batch() computes at its end
            if dirty is None or self._pending is None:
                self._pending = None
            else:
                self._pending |= dirty
            return
        cluster_ports: dict[str, frozenset[tuple[str, int]]] = {}
        for ep in self._endpoints.values():
            for name, pairs in ep.ports.items():
                cluster_ports[name] = cluster_ports.get(name, frozenset()) | pairs
        if cluster_ports != self._cluster_ports:
            self._cluster_ports, dirty = cluster_ports, None  # egress named ports moved
        peers, moved = frozenset(self._moved_peers), frozenset(self._moved_selectors)
        self._moved_peers.clear()
        self._moved_selectors.clear()
        self._asked.intersection_update(self._endpoints)
        select = functools.cache(self._select)  # rules are shared by many endpoints
        settled: dict[Group, EndpointPolicy] = {}
        """A policy up to date for each group seen (an endpoint's own identity never enters
        its entries, so every member of a group has the same)."""
        updated: dict[tuple[Group, int], EndpointPolicy] = {}
        """Peer updates by group and old entries (group members share their entries)."""
        fresh: list[tuple[str, Endpoint, Group]] = []
        changed: dict[str, EndpointPolicy] = {}
        for key, ep in self._endpoints.items():
            if not self._computes(key, ep):
                continue
            old = self._computed.get(key)
            rules = self._selecting_rules(ep)
            group: Group = (tuple(map(id, rules)), frozenset(ep.ports.items()))
            if old is None or dirty is None or key in dirty:
                fresh.append((key, ep, group))
                continue
            policy = old
            if moved and any(not moved.isdisjoint(r.peers) for r in rules):
                found = updated.get((group, id(old.by_peer)))
                if found is None:
                    found = recompute_peers(old, peers, rules, select, ep.ports, cluster_ports)
                    updated[(group, id(old.by_peer))] = found
                if found.by_peer is not old.by_peer:  # (the same object when nothing moved)
                    policy = _as(found, ep.identity)
            settled.setdefault(group, policy)
            if policy is not old:
                changed[key] = policy
        for key, ep, group in fresh:
            found = settled.get(group)
            if found is None:
                found = settled[group] = self._compute(ep, select, cluster_ports)
            policy = _as(found, ep.identity)
            if self._computed.get(key) != policy:
                changed[key] = policy
        for key in [k for k in self._computed if not self._computes(k, self._endpoints.get(k))]:
            del self._computed[key]
        self._computed.update(changed)
        if changed:
            for listener in self._listeners:
                listener(changed)

    def _compute(
        self,
        ep: Endpoint,
        select: Callable[[tuple[Selector, ...]], frozenset[int]],
        cluster_ports: NamedPorts,
    ) -> EndpointPolicy:
        """An endpoint's policy from scratch."""
        rules = self._selecting_rules(ep)
        return compute(ep.identity, ep.labels, rules, select, ep.ports, cluster_ports, self.config)

    def _computes(self, key: str, ep: Endpoint | None) -> bool:
        """Whether the repository keeps this endpoint's policy computed."""
        if ep is None:
            return False
        return self._node is None or ep.node == self._node or key in self._asked

    def _select(self, selectors: tuple[Selector, ...]) -> frozenset[int]:
        return self.selectors.selections(selectors)


def _as(policy: EndpointPolicy, identity: int) -> EndpointPolicy:
    """A group's policy for one member."""
    return policy if policy.identity == identity else dataclasses.replace(policy, identity=identity)


def load(repo: Repository, objects: Iterable[Object]) -> None:
    """Feed store objects (Namespaces, Pods, policies) into a repository, namespaces first."""
    objects = list(objects)
    with repo.batch():
        for obj in objects:
            if obj["kind"] == "Namespace":
                repo.set_namespace(obj)
        for obj in objects:
            if obj["kind"] == "Pod":
                repo.set_pod(obj)
            elif obj["kind"] in KINDS:
                repo.set_policy(obj)
