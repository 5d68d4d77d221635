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


Listener = Callable[[dict[str, EndpointPolicy]], None]


class Repository:
    """Policies and endpoints; computes each endpoint's policy.

    Args:
        config: enforcement mode and audit flag.
        numbers: identity numbering (a fresh local one by default).
        label_filter: which pod labels are identity-relevant.
    """

    def __init__(
        self,
        config: PolicyConfig | None = None,
        numbers: Numbering | None = None,
        label_filter: LabelFilter | None = None,
    ) -> None:
        self.config = config or PolicyConfig()
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
        self._refresh_pods(key.partition("/")[0])

    def delete_pod(self, namespace: str, name: str) -> None:
        """Remove a Pod."""
        self._pods.pop(f"{namespace}/{name}", None)
        self._refresh_pods(namespace)

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
        """Re-derive every endpoint, e.g. once the numbering knows identities it did not."""
        for namespace in {k.partition("/")[0] for k in self._pods} | set(self._namespaces):
            self._refresh_pods(namespace)
        self._recompute(None)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Apply many changes and compute every endpoint once at the end (a first load),
        not after each change."""
        self._batching = True
        try:
            yield
        finally:
            self._batching = False
            self._recompute(None)

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` with {endpoint key: new policy} whenever endpoint policies change
        (a deleted endpoint is absent from `endpoints()` when it is called)."""
        self._listeners.append(listener)

    # --- outputs -----------------------------------------------------------------------------

    def endpoints(self) -> dict[str, Endpoint]:
        """Every endpoint by `namespace/name`."""
        return dict(self._endpoints)

    def policy(self, key: str) -> EndpointPolicy:
        """The computed policy of an endpoint (KeyError if unknown)."""
        return self._computed[key]

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

    def _selecting_rules(self, labels: Labels) -> list[Rule]:
        found = self._selecting.get(labels)
        if found is None:
            every = (r for rules in self._policies.values() for r in rules)
            found = self._selecting[labels] = [r for r in every if r.subject.matches(labels)]
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

    def _refresh_pods(self, namespace: str, dirty: set[str] | None = None) -> None:
        """Re-derive the endpoints of one namespace and push identity changes; recompute the
        endpoints that changed, those in `dirty`, and those whose peers' selections moved."""
        dirty = set(dirty or ())
        old = {
            k: self._endpoints.pop(k)
            for k in list(self._endpoints)
            if k.startswith(namespace + "/")
        }
        ns_obj = self._namespaces.get(namespace)
        for key, pod in self._pods.items():
            if key.startswith(namespace + "/"):
                self._endpoints[key] = self._endpoint(key, pod, ns_obj)
                if old.get(key) != self._endpoints[key]:
                    dirty.add(key)
        # only identities of this namespace's endpoints (before or now) can have changed
        touched = {ep.identity for ep in old.values()} | {
            self._endpoints[k].identity for k in dirty if k in self._endpoints
        }
        by_identity: dict[int, tuple[Labels, set[Address]]] = {}
        for ep in self._endpoints.values():
            if ep.identity in touched:
                by_identity.setdefault(ep.identity, (ep.labels, set()))[1].update(ep.ips)
        for number in touched - by_identity.keys():
            self.selectors.remove_identity(number)
        for number, (labels, ips) in by_identity.items():
            self.selectors.upsert_identity(number, labels, ips)
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
        )

    def _recompute(self, dirty: set[str] | None) -> None:
        """Compute anew the policies of the endpoints in `dirty` (None: all), and re-derive
        the entries of peers whose selections moved in the endpoints whose rules use the
        moved selectors; the rest keep their policies."""
        self.revision += 1
        if self._batching:
            return  # batch() computes everything at its end
        cluster_ports: dict[str, frozenset[tuple[str, int]]] = {}
        for ep in self._endpoints.values():
            for name, pairs in ep.ports.items():
                cluster_ports[name] = cluster_ports.get(name, frozenset()) | pairs
        if cluster_ports != self._cluster_ports:
            self._cluster_ports, dirty = cluster_ports, None  # egress named ports moved
        peers, moved = frozenset(self._moved_peers), frozenset(self._moved_selectors)
        self._moved_peers.clear()
        self._moved_selectors.clear()
        changed: dict[str, EndpointPolicy] = {}
        select = functools.cache(self._select)  # rules are shared by many endpoints
        for key, ep in self._endpoints.items():
            old = self._computed.get(key)
            rules = self._selecting_rules(ep.labels)
            if old is None or dirty is None or key in dirty:
                policy = compute(
                    ep.identity, ep.labels, rules, select, ep.ports, cluster_ports, self.config
                )
                if old == policy:
                    continue
            elif moved and any(not moved.isdisjoint(r.peers) for r in rules):
                policy = recompute_peers(old, peers, rules, select, ep.ports, cluster_ports)
                if policy is old:  # returned as is when its peers' entries are the same
                    continue
            else:
                continue
            changed[key] = policy
        for key in [k for k in self._computed if k not in self._endpoints]:
            del self._computed[key]
        self._computed.update(changed)
        if changed:
            for listener in self._listeners:
                listener(changed)

    def _select(self, selectors: tuple[Selector, ...]) -> frozenset[int]:
        return self.selectors.selections(selectors)


def load(repo: Repository, objects: Iterable[Object]) -> None:
    """Feed store objects (Namespaces, Pods, policies) into a repository, namespaces first."""
    objects = list(objects)
    with repo.batch():
        _load(repo, objects)


def _load(repo: Repository, objects: list[Object]) -> None:
    for obj in objects:
        if obj["kind"] == "Namespace":
            repo.set_namespace(obj)
    for obj in objects:
        if obj["kind"] == "Pod":
            repo.set_pod(obj)
        elif obj["kind"] in KINDS:
            repo.set_policy(obj)
