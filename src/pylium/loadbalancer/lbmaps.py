"""The desired content of one node's LB maps, kept incrementally from service changes.

`LBMaps.sync(changes)` turns ServiceState changes (from `ServiceTable.take_changes()`) into
frontends for this node, gives each frontend a service id (= reverse-NAT index) and each
backend address a backend id, updates the typed map contents and returns a `MapDelta`: the
entries to write and delete, encoded, for the datapath reconciler. Ids are the lowest free
ones; a frontend or backend keeps its id for as long as it exists (conntrack entries refer
to backend ids), so new references are taken before old ones are dropped.

`dump()` prints the contents as Cilium's `lb/maps-dump` does (README "Inspecting state").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from pylium.loadbalancer import encoding as enc
from pylium.loadbalancer.changes import Change
from pylium.loadbalancer.frontends import Frontend, FrontendKey, frontends
from pylium.loadbalancer.maglev import DEFAULT_SEED, DEFAULT_TABLE_SIZE, lookup_table
from pylium.loadbalancer.model import (
    Algorithm,
    BackendState,
    FrontendType,
    L4Addr,
    ServiceName,
    ServiceState,
)

MAX_SERVICE_ID = 0xFFFF
"""rev_nat_index is a u16."""
MAX_BACKEND_ID = 0xFFFFFFFF

SERVICES, BACKENDS, REVNAT, AFFINITY_MATCH, MAGLEV = (
    "services",
    "backends",
    "reverse_nat",
    "affinity_match",
    "maglev",
)
MAPS = (SERVICES, BACKENDS, REVNAT, AFFINITY_MATCH, MAGLEV)
_ABSENT = object()
"""A key that had no value before the sync."""
Touched = dict[str, dict[Any, Any]]
"""Per map, each key changed in one sync -> its value before (or _ABSENT)."""

_TYPE_FLAGS = {
    FrontendType.CLUSTER_IP: 0,
    FrontendType.NODE_PORT: enc.SVC_FLAG_NODEPORT,
    FrontendType.EXTERNAL_IP: enc.SVC_FLAG_EXTERNAL_IP,
    FrontendType.LOAD_BALANCER: enc.SVC_FLAG_LOADBALANCER,
}


@dataclass(frozen=True)
class LBParams:
    """Per-node settings of the LB maps."""

    node: str
    node_addresses: tuple[IPv4Address, ...] = ()
    """Addresses NodePort frontends are created for (besides 0.0.0.0)."""
    algorithm: Algorithm = Algorithm.RANDOM
    """Backend selection when a service does not choose (`bpf-lb-algorithm`)."""
    maglev_table_size: int = DEFAULT_TABLE_SIZE
    maglev_seed: int = DEFAULT_SEED


@dataclass
class MapDelta:
    """Encoded changes per map: entries to write (key -> value) and keys to delete."""

    upserts: dict[str, dict[bytes, bytes]] = field(default_factory=lambda: {m: {} for m in MAPS})
    deletes: dict[str, set[bytes]] = field(default_factory=lambda: {m: set() for m in MAPS})

    def empty(self) -> bool:
        """True when nothing changed."""
        return not any(self.upserts.values()) and not any(self.deletes.values())


class _Ids:
    """Lowest-free id allocation."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._free: set[int] = set()
        self._next = 1

    def take(self) -> int:
        if self._free:
            smallest = min(self._free)
            self._free.discard(smallest)
            return smallest
        if self._next > self._limit:
            raise OverflowError(f"no free id below {self._limit}")
        self._next += 1
        return self._next - 1

    def give(self, value: int) -> None:
        self._free.add(value)
        while self._next - 1 in self._free:  # keep the free set small
            self._next -= 1
            self._free.discard(self._next)


class LBMaps:
    """The node's LB map contents, kept from service changes (see the module docstring)."""

    def __init__(self, params: LBParams) -> None:
        if params.maglev_table_size <= 1:
            raise ValueError("maglev table size must be a prime above 1")
        self.params = params
        self._frontends: dict[FrontendKey, Frontend] = {}
        self._by_service: dict[ServiceName, set[FrontendKey]] = {}
        self._states: dict[ServiceName, ServiceState] = {}
        self._svc_ids: dict[FrontendKey, int] = {}
        self._svc_alloc = _Ids(MAX_SERVICE_ID)
        self._be_ids: dict[L4Addr, int] = {}
        self._be_alloc = _Ids(MAX_BACKEND_ID)
        self._be_refs: dict[L4Addr, dict[FrontendKey, BackendState]] = {}
        self.contents: dict[str, dict[Any, Any]] = {m: {} for m in MAPS}
        """Typed map contents: services ServiceKey -> ServiceValue, backends id -> (L4Addr,
        state), reverse_nat id -> L4Addr, affinity_match (backend id, rev nat) -> 0,
        maglev rev nat -> tuple of backend ids."""

    def frontends(self) -> dict[FrontendKey, Frontend]:
        """Every frontend of the node (the Frontends table)."""
        return dict(self._frontends)

    def sync(self, changes: dict[ServiceName, Change[ServiceState]]) -> MapDelta:
        """Apply service changes; return what to write to the maps."""
        for name, change in changes.items():
            if change.new is None:
                self._states.pop(name, None)
            else:
                self._states[name] = change.new
        return self._resync(changes.keys())

    def set_node_addresses(self, addresses: Iterable[IPv4Address]) -> MapDelta:
        """The node's addresses changed: redo the NodePort frontends of every service."""
        new = tuple(sorted(set(addresses)))
        if new == self.params.node_addresses:
            return MapDelta()
        self.params = LBParams(**{**self.params.__dict__, "node_addresses": new})
        return self._resync(list(self._states))

    def _resync(self, names: Iterable[ServiceName]) -> MapDelta:
        fe_changes: dict[FrontendKey, Change[Frontend]] = {}
        for name in sorted(names):
            old_keys = self._by_service.pop(name, set())
            old = {k: self._frontends[k] for k in old_keys}
            state = self._states.get(name)
            new = (
                frontends(state, self.params.node, self.params.node_addresses)
                if state is not None
                else {}
            )
            if new:
                self._by_service[name] = set(new)
            for key in sorted(old.keys() | new.keys()):
                if old.get(key) != new.get(key):
                    fe_changes[key] = Change(old.get(key), new.get(key))
        return self._apply(fe_changes)

    def _apply(self, fe_changes: dict[FrontendKey, Change[Frontend]]) -> MapDelta:
        # Each touched key's value before this sync (not a copy of the maps: one add at 30 000
        # services must stay cheap).
        touched: Touched = {m: {} for m in MAPS}
        # New references first, so a backend moving between frontends keeps its id.
        for key, ch in sorted(fe_changes.items()):
            if ch.new is None:
                continue
            if key not in self._svc_ids:
                self._svc_ids[key] = self._svc_alloc.take()
            for be in (*ch.new.backends, *ch.new.quarantined):
                self._ref_backend(be.address, key, be.state, touched)
        for key, ch in sorted(fe_changes.items()):
            if ch.old is not None:
                self._remove_entries(key, ch.old, touched)
                kept = (
                    {b.address for b in (*ch.new.backends, *ch.new.quarantined)}
                    if ch.new is not None
                    else set()
                )
                for be in (*ch.old.backends, *ch.old.quarantined):
                    if be.address not in kept:
                        self._unref_backend(be.address, key, touched)
            if ch.new is None:
                self._frontends.pop(key, None)
                self._svc_alloc.give(self._svc_ids.pop(key))
            else:
                self._frontends[key] = ch.new
                self._add_entries(key, ch.new, touched)
        return self._delta(touched)

    def _ref_backend(
        self, addr: L4Addr, fe: FrontendKey, state: BackendState, touched: Touched
    ) -> None:
        refs = self._be_refs.setdefault(addr, {})
        refs[fe] = state
        if addr not in self._be_ids:
            self._be_ids[addr] = self._be_alloc.take()
        self._write_backend(addr, touched)

    def _unref_backend(self, addr: L4Addr, fe: FrontendKey, touched: Touched) -> None:
        refs = self._be_refs.get(addr, {})
        refs.pop(fe, None)
        if refs:
            self._write_backend(addr, touched)
            return
        self._be_refs.pop(addr, None)
        be_id = self._be_ids.pop(addr)
        self._be_alloc.give(be_id)
        self._touch(touched, BACKENDS, be_id)
        self.contents[BACKENDS].pop(be_id, None)

    def _write_backend(self, addr: L4Addr, touched: Touched) -> None:
        states = set(self._be_refs[addr].values())
        state = next(
            s
            for s in (BackendState.QUARANTINED, BackendState.TERMINATING, BackendState.ACTIVE)
            if s in states
        )
        be_id = self._be_ids[addr]
        self._touch(touched, BACKENDS, be_id)
        self.contents[BACKENDS][be_id] = (addr, state)

    def _entries(self, key: FrontendKey, fe: Frontend) -> dict[str, dict[Any, Any]]:
        svc_id = self._svc_ids[key]
        scope = enc.SCOPE_INTERNAL if key.internal else enc.SCOPE_EXTERNAL
        algorithm = fe.algorithm.value if fe.algorithm is not None else None
        flags, flags2 = frontend_flags(fe)
        slots = [self._be_ids[b.address] for b in (*fe.backends, *fe.quarantined)]
        count, qcount = len(fe.backends), len(fe.quarantined)
        services: dict[Any, Any] = {
            enc.ServiceKey(key.address, 0, scope): enc.ServiceValue(
                enc.master_word(fe.affinity_timeout, algorithm),
                count,
                svc_id,
                flags,
                flags2,
                qcount,
            )
        }
        for slot, be_id in enumerate(slots, start=1):
            services[enc.ServiceKey(key.address, slot, scope)] = enc.ServiceValue(
                be_id, 0, svc_id, flags, flags2, 0
            )
        out: dict[str, dict[Any, Any]] = {
            SERVICES: services,
            REVNAT: {svc_id: key.address},
            AFFINITY_MATCH: {},
            MAGLEV: {},
        }
        if fe.affinity_timeout:
            out[AFFINITY_MATCH] = {(be_id, svc_id): 0 for be_id in slots}
        effective = fe.algorithm or self.params.algorithm
        if effective == Algorithm.MAGLEV and fe.backends:
            names = {str(b.address): self._be_ids[b.address] for b in fe.backends}
            ordered = sorted(names)
            table = lookup_table(ordered, self.params.maglev_table_size, self.params.maglev_seed)
            out[MAGLEV] = {svc_id: tuple(names[ordered[i]] for i in table)}
        return out

    def _add_entries(self, key: FrontendKey, fe: Frontend, touched: Touched) -> None:
        for m, entries in self._entries(key, fe).items():
            for k in entries:
                self._touch(touched, m, k)
            self.contents[m].update(entries)

    def _remove_entries(self, key: FrontendKey, fe: Frontend, touched: Touched) -> None:
        for m, entries in self._entries_for_removal(key, fe).items():
            for k in entries:
                self._touch(touched, m, k)
                self.contents[m].pop(k, None)

    def _entries_for_removal(self, key: FrontendKey, fe: Frontend) -> dict[str, set[Any]]:
        """Keys an old frontend wrote (its backends may have lost their ids already)."""
        svc_id = self._svc_ids[key]
        scope = enc.SCOPE_INTERNAL if key.internal else enc.SCOPE_EXTERNAL
        slots = len(fe.backends) + len(fe.quarantined)
        return {
            SERVICES: {enc.ServiceKey(key.address, s, scope) for s in range(slots + 1)},
            REVNAT: {svc_id},
            AFFINITY_MATCH: {k for k in self.contents[AFFINITY_MATCH] if k[1] == svc_id},
            MAGLEV: {svc_id},
        }

    def _touch(self, touched: Touched, m: str, key: Any) -> None:
        """Remember `key`'s value before its first change in this sync."""
        if key not in touched[m]:
            touched[m][key] = self.contents[m].get(key, _ABSENT)

    def _delta(self, touched: Touched) -> MapDelta:
        delta = MapDelta()
        for m in MAPS:
            for k, old in touched[m].items():
                new = self.contents[m].get(k)
                if new is None and old is not _ABSENT:
                    delta.deletes[m].add(encode_key(m, k))
                elif new is not None and old != new:
                    ek, ev = encode_entry(m, k, new)
                    delta.upserts[m][ek] = ev
        return delta

    def encoded(self) -> dict[str, dict[bytes, bytes]]:
        """Every map's full content, encoded (for a prune against the kernel)."""
        return {m: dict(encode_entry(m, k, v) for k, v in self.contents[m].items()) for m in MAPS}

    def empty(self) -> bool:
        """True when no map holds anything (and no id is taken)."""
        return not any(self.contents.values()) and not self._svc_ids and not self._be_ids

    def dump(self) -> str:
        """The maps as text, one line per entry (Cilium's `lb/maps-dump` format)."""
        return render(self.contents)


def frontend_flags(fe: Frontend) -> tuple[int, int]:
    """(flags, flags2) of a frontend's services-map entries."""
    flags = _TYPE_FLAGS[fe.type]
    if fe.external_local:
        flags |= enc.SVC_FLAG_EXT_LOCAL_SCOPE
    if fe.affinity_timeout:
        flags |= enc.SVC_FLAG_AFFINITY
    if fe.routable:
        flags |= enc.SVC_FLAG_ROUTABLE
    flags2 = 0
    if fe.internal_local:
        flags2 |= enc.SVC_FLAG2_INT_LOCAL_SCOPE
    if fe.two_scopes:
        flags2 |= enc.SVC_FLAG2_TWO_SCOPES
    if fe.reject and not fe.backends:
        flags2 |= enc.SVC_FLAG2_REJECT
    return flags, flags2


def flags_text(flags: int, flags2: int) -> str:
    """`ClusterIP+non-routable`, `NodePort+Local+two-scopes`, ... as Cilium prints them."""
    if flags & enc.SVC_FLAG_EXTERNAL_IP:
        parts = ["ExternalIPs"]
    elif flags & enc.SVC_FLAG_NODEPORT:
        parts = ["NodePort"]
    elif flags & enc.SVC_FLAG_LOADBALANCER:
        parts = ["LoadBalancer"]
    else:
        parts = ["ClusterIP"]
    named = (
        (flags & enc.SVC_FLAG_EXT_LOCAL_SCOPE, "Local"),
        (flags2 & enc.SVC_FLAG2_INT_LOCAL_SCOPE, "InternalLocal"),
        (flags2 & enc.SVC_FLAG2_TWO_SCOPES, "two-scopes"),
        (flags & enc.SVC_FLAG_AFFINITY, "sessionAffinity"),
        (not flags & enc.SVC_FLAG_ROUTABLE, "non-routable"),
        (flags2 & enc.SVC_FLAG2_REJECT, "reject"),
    )
    parts += [name for on, name in named if on]
    return "+".join(parts)


def encode_key(m: str, key: Any) -> bytes:
    """A typed key of map `m`, encoded."""
    if m == SERVICES:
        return bytes(key.encode())
    if m == BACKENDS:
        return enc.BACKEND_KEY.pack(key)
    if m == REVNAT:
        return enc.REVNAT_KEY.pack(key)
    if m == AFFINITY_MATCH:
        return enc.AFFINITY_MATCH_KEY.pack(*key)
    return enc.MAGLEV_KEY.pack(key)


def encode_entry(m: str, key: Any, value: Any) -> tuple[bytes, bytes]:
    """A typed entry of map `m`, encoded."""
    if m == SERVICES:
        return key.encode(), value.encode()
    if m == BACKENDS:
        addr, state = value
        return enc.encode_backend(key, addr, state)
    if m == REVNAT:
        return enc.encode_revnat(key, value.address, value.port)
    if m == AFFINITY_MATCH:
        return enc.encode_affinity_match(*key)
    return enc.encode_maglev(key, value)


def render(contents: dict[str, dict[Any, Any]]) -> str:
    """Typed map contents as text."""
    lines: list[str] = []
    for be_id, rev in sorted(contents[AFFINITY_MATCH], key=lambda k: (k[1], k[0])):
        lines.append(f"AFF: ID={rev} BEID={be_id}")
    for be_id, (addr, state) in sorted(contents[BACKENDS].items()):
        lines.append(f"BE: ID={be_id} ADDR={addr} STATE={state}")
    for rev, table in sorted(contents[MAGLEV].items()):
        counts: dict[int, int] = {}
        for be_id in table:
            counts[be_id] = counts.get(be_id, 0) + 1
        inner = ", ".join(f"{b}({n})" for b, n in sorted(counts.items()))
        lines.append(f"MAGLEV: ID={rev} INNER=[{inner}]")
    for rev, addr in sorted(contents[REVNAT].items()):
        lines.append(f"REV: ID={rev} ADDR={addr.address}:{addr.port}")
    services = contents[SERVICES]
    for key in sorted(services, key=lambda k: (services[k].rev_nat_index, k.slot)):
        v = services[key]
        scope = "/i" if key.scope == enc.SCOPE_INTERNAL else ""
        head = f"SVC: ID={v.rev_nat_index} ADDR={key.address}{scope} SLOT={key.slot}"
        flags = flags_text(v.flags, v.flags2)
        if key.slot == 0:
            alg = enc.LB_ALGORITHMS_NAMES[v.backend_id >> 24]
            timeout = v.backend_id & enc.AFFINITY_TIMEOUT_MASK
            lines.append(
                f"{head} LBALG={alg} AFFTimeout={timeout} COUNT={v.count}"
                f" QCOUNT={v.qcount} FLAGS={flags}"
            )
        else:
            lines.append(f"{head} BEID={v.backend_id} COUNT=0 QCOUNT=0 FLAGS={flags}")
    return "".join(f"{line}\n" for line in lines)
