"""The policy maps of the endpoint datapath (bpf/lib/policy.h), their writer, and the agent
component that keeps them equal to the policy repository.

`pylium_policy` is one LPM trie for all endpoints of the node: each row is a policy-map row of
`pylium.policy.compute.encode_rows` (Cilium's `struct policy_key` / `struct policy_entry`, see
`pylium.policy.mapstate`) with the endpoint id inserted after the prefix length, which grows
by 32 bits. `pylium_policy_ep` holds per endpoint the enforced directions and the audit flag.

With `allow_localhost` (Cilium's `allow-localhost=auto`), an ingress-enforced endpoint also gets
an allow row for the `host` identity: the node itself (kubelet probes, kube-proxy-mode service
traffic masqueraded to the node's address) always reaches its pods, unless a deny rule covers
it (deny precedence still holds in the datapath's lookup).

`PolicyMaps.sync` makes one endpoint's rows and flags equal to its computed policy without a
moment of less enforcement than either the old or the new policy: new and changed rows first,
then the flags, then stale rows. Bookkeeping follows each kernel call, so a failed call leaves
the cache equal to the kernel. Rows are kept per peer identity, and a sync looks only at peers
whose entries are not the very object it wrote last (`PeerEntries`): a peer update costs that
peer's rows, not the policy's thousands. The maps are pinned: after an agent restart the programs
keep enforcing the old rows until `sync` replaces them (nothing is flushed first).

`PolicyEnforcement` runs the policy repository in the agent: a `PolicyWatcher` feeds it from
the store, identities come from the agent's `IdentityAllocator` (the numbers the ipcache puts
into the datapath), and a reconciler job syncs each local endpoint's computed policy into the
maps, prunes endpoints gone from the node, and retries a failed kernel write on its next run.
A label set whose cluster-wide identity is not known yet (its pod's node has not allocated it)
gets a placeholder number above the cluster range, which no packet carries: its rows match
nothing until the allocator learns the real number and the repository is refreshed. CIDR rule
prefixes get placeholders too: their two CIDR classes (`Repository.cidr_classes`), which
`CidrClasses` writes into `pylium_policy_cidr` after the endpoints' rows, so a class appears
once rows for it exist and goes once they are gone (bpf/lib/policy.h tells how packets find
them).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path

from pylium.datapath.errors import BpfError
from pylium.datapath.events import Direction as EventDirection
from pylium.datapath.events import Event, PolicyVerdict
from pylium.datapath.ipcache import IPCacheKey
from pylium.datapath.lxc import MAP_POLICY, MAP_POLICY_CIDR, MAP_POLICY_EP
from pylium.datapath.maps import Map, RawMap
from pylium.hubble.flow import Policy
from pylium.identity import IdentityAllocator
from pylium.identity.labels import Labels
from pylium.identity.numeric import IDENTITY_HOST, MAX_CLUSTER_IDENTITY
from pylium.ipcache import decode_key
from pylium.policy import (
    EndpointPolicy,
    PolicyConfig,
    PolicyEntry,
    PolicyKey,
    Repository,
)
from pylium.policy.compute import PeerEntries, encode_rows
from pylium.policy.rules import Direction, PolicyRef
from pylium.policy.selector import Network, cidr_class_labels
from pylium.policy.watcher import PolicyWatcher
from pylium.store import Store

log = logging.getLogger(__name__)

FLAG_INGRESS = 0x01
FLAG_EGRESS = 0x02
FLAG_AUDIT = 0x04

_EP_BITS = 32
_COUNTERS = 16
"""The trailing packets/bytes counters of a policy entry, written by the datapath."""
ALLOW_LOCALHOST_LABEL = "(allow-localhost: the node reaches its pods)"
_LOCALHOST_KEY = PolicyKey(Direction.INGRESS, IDENTITY_HOST, 0)
_LOCALHOST_ENTRY = PolicyEntry(False, frozenset([ALLOW_LOCALHOST_LABEL]))


class PolicyMapKey(ctypes.Structure):
    """struct policy_key of bpf/lib/policy.h, as its 16 raw bytes."""

    _fields_ = [("raw", ctypes.c_uint8 * 16)]


class PolicyMapEntry(ctypes.Structure):
    """struct policy_entry (mapstate's 24-byte encoding)."""

    _fields_ = [("raw", ctypes.c_uint8 * 24)]


class EndpointId(ctypes.Structure):
    """The u32 endpoint id key of pylium_policy_ep."""

    _fields_ = [("id", ctypes.c_uint32)]


class EndpointFlags(ctypes.Structure):
    """struct policy_ep."""

    _fields_ = [("flags", ctypes.c_uint32)]


def endpoint_key(endpoint: int, key: bytes) -> bytes:
    """A mapstate key (12 bytes) as the endpoint's row key in pylium_policy."""
    (prefix_len,) = struct.unpack_from("<I", key)
    return struct.pack("<II", prefix_len + _EP_BITS, endpoint) + key[4:]


def endpoint_flags(policy: EndpointPolicy) -> int:
    """The pylium_policy_ep flags of a computed policy."""
    flags = FLAG_INGRESS if Direction.INGRESS in policy.enforced else 0
    flags |= FLAG_EGRESS if Direction.EGRESS in policy.enforced else 0
    return flags | (FLAG_AUDIT if policy.audit else 0)


class Cookies:
    """Numbers each distinct set of rule labels for verdict events (0 = no rules)."""

    def __init__(self) -> None:
        self._numbers: dict[frozenset[str], int] = {}
        self._names: dict[int, tuple[str, ...]] = {}

    def __call__(self, rules: frozenset[str]) -> int:
        if not rules:
            return 0
        number = self._numbers.get(rules)
        if number is None:
            number = len(self._numbers) + 1
            self._numbers[rules] = number
            self._names[number] = tuple(sorted(rules))
        return number

    def names(self, cookie: int) -> tuple[str, ...]:
        """The rule labels a cookie stands for (empty if unknown)."""
        return self._names.get(cookie, ())

    def table(self) -> dict[int, tuple[str, ...]]:
        """Every cookie with its rule labels."""
        return dict(self._names)


class PolicyMaps:
    """Writes endpoints' computed policies into the two pinned policy maps.

    Args:
        rules: the `pylium_policy` map.
        endpoints: the `pylium_policy_ep` map.
        cookie: numbers rule-label sets for the entries (a fresh `Cookies` by default).
        allow_localhost: add the host identity's ingress allow row (see the module).
    """

    def __init__(
        self,
        rules: RawMap,
        endpoints: RawMap,
        cookie: Callable[[frozenset[str]], int] | None = None,
        allow_localhost: bool = True,
    ) -> None:
        self._allow_localhost = allow_localhost
        self._rules = Map(rules, PolicyMapKey, PolicyMapEntry)
        self._eps = Map(endpoints, EndpointId, EndpointFlags)
        self.cookie = cookie or Cookies()
        # What the kernel holds, per endpoint and peer identity: row key -> entry without
        # counters; flags. And per endpoint and peer, the entries last written in full: a peer
        # whose entries are the very same object again needs no work (see `PeerEntries`).
        self._rows: dict[int, dict[int, dict[bytes, bytes]]] = {}
        self._flags: dict[int, int] = {}
        self._written: dict[int, dict[int, PeerEntries]] = {}
        for k, v in self._rules.items():
            raw = bytes(k.raw)
            ep, peer = struct.unpack_from("<II", raw, 4)
            self._rows.setdefault(ep, {}).setdefault(peer, {})[raw] = bytes(v.raw)[:-_COUNTERS]
        for ek, ev in self._eps.items():
            self._flags[ek.id] = ev.flags

    def endpoints(self) -> set[int]:
        """Endpoint ids with rows or flags in the maps."""
        return set(self._rows) | set(self._flags)

    def rows(self, endpoint: int) -> dict[bytes, bytes]:
        """The endpoint's row keys and entries (without counters), as last written."""
        return {k: v for peer in self._rows.get(endpoint, {}).values() for k, v in peer.items()}

    def sync(self, endpoint: int, policy: EndpointPolicy) -> int:
        """Make the endpoint's rows and flags those of `policy`; returns kernel writes. Only
        the rows of peers whose entries changed since the last sync are looked at."""
        desired = dict(policy.by_peer)
        host = desired.get(IDENTITY_HOST, {})
        if (
            self._allow_localhost
            and Direction.INGRESS in policy.enforced
            and _LOCALHOST_KEY not in host
        ):
            desired[IDENTITY_HOST] = {**host, _LOCALHOST_KEY: _LOCALHOST_ENTRY}
        have = self._rows.setdefault(endpoint, {})
        written = self._written.setdefault(endpoint, {})
        moved = {
            peer: {
                endpoint_key(endpoint, k): v
                for k, v in encode_rows(desired.get(peer, {}), self.cookie).items()
            }
            for peer in desired.keys() | have.keys()
            if peer not in written or desired.get(peer) is not written[peer]
        }
        writes = 0
        for peer, rows in moved.items():
            held = have.setdefault(peer, {})
            for key, value in rows.items():
                if held.get(key) != value[:-_COUNTERS]:
                    self._rules.update(_key(key), PolicyMapEntry.from_buffer_copy(value))
                    held[key] = value[:-_COUNTERS]
                    writes += 1
        writes += self._set_flags(endpoint, endpoint_flags(policy))
        for peer, rows in moved.items():
            held = have[peer]
            for key in [k for k in held if k not in rows]:
                self._rules.delete(_key(key), missing_ok=True)
                del held[key]
                writes += 1
            if peer in desired:
                written[peer] = desired[peer]
            else:
                written.pop(peer, None)
                del have[peer]
        return writes

    def remove(self, endpoint: int) -> None:
        """Forget an endpoint: its flags, then its rows."""
        if endpoint in self._flags:
            self._eps.delete(EndpointId(endpoint), missing_ok=True)
            del self._flags[endpoint]
        self._written.pop(endpoint, None)
        for held in self._rows.get(endpoint, {}).values():
            for key in list(held):
                self._rules.delete(_key(key), missing_ok=True)
                del held[key]
        self._rows.pop(endpoint, None)

    def prune(self, keep: Iterable[int]) -> None:
        """Remove every endpoint not in `keep`."""
        for endpoint in self.endpoints() - set(keep):
            self.remove(endpoint)

    def _set_flags(self, endpoint: int, flags: int) -> int:
        if self._flags.get(endpoint) == flags:
            return 0
        self._eps.update(EndpointId(endpoint), EndpointFlags(flags))
        self._flags[endpoint] = flags
        return 1


class CidrClass(ctypes.Structure):
    """struct policy_cidr_class: the class identities for outside and in-cluster peers."""

    _fields_ = [("world", ctypes.c_uint32), ("cluster", ctypes.c_uint32)]


class CidrClasses:
    """Keeps `pylium_policy_cidr` equal to the repository's CIDR classes (IPv4 prefixes: the
    datapath is IPv4 only). Its key is the ipcache's (prefix length, address), so
    `IPCacheKey` encodes it."""

    def __init__(self, raw: RawMap) -> None:
        self._map = Map(raw, IPCacheKey, CidrClass)
        self._have: dict[IPv4Network, tuple[int, int]] = {
            decode_key(bytes(k)): (v.world, v.cluster) for k, v in self._map.items()
        }

    def held(self) -> dict[IPv4Network, tuple[int, int]]:
        """The classes as last written (after a restart: as the pinned map holds them)."""
        return dict(self._have)

    def sync(self, classes: Mapping[Network, tuple[int, int]]) -> int:
        """Write new and changed classes, then delete stale ones; returns kernel writes."""
        desired = {p: ids for p, ids in classes.items() if isinstance(p, IPv4Network)}
        writes = 0
        for prefix, ids in desired.items():
            if self._have.get(prefix) != ids:
                self._map.update(IPCacheKey.of(prefix), CidrClass(*ids))
                self._have[prefix] = ids
                writes += 1
        for prefix in [p for p in self._have if p not in desired]:
            self._map.delete(IPCacheKey.of(prefix), missing_ok=True)
            del self._have[prefix]
            writes += 1
        return writes


PENDING_BASE = MAX_CLUSTER_IDENTITY + 1
"""First placeholder number for a label set without a known identity."""


class AllocatorNumbering:
    """The repository's `Numbering` over the agent's identity allocator."""

    def __init__(self, allocator: IdentityAllocator) -> None:
        self._allocator = allocator
        self._pending: dict[Labels, int] = {}
        self._next = PENDING_BASE

    def number(self, labels: Labels) -> int:
        found = self._allocator.lookup(labels)
        if found is not None:
            return found.id
        number = self._pending.get(labels)
        if number is None:
            number = self.keep(labels, self._next)
        return number

    def keep(self, labels: Labels, number: int) -> int:
        """Give a label set the placeholder it had before a restart (the pinned maps still
        use it: numbering it anew could give its number to another set for a moment)."""
        self._pending[labels] = number
        self._next = max(self._next, number + 1)
        return number


@dataclass(frozen=True)
class EnforcementParams:
    """Settings of the policy component."""

    pin_dir: Path
    """The node's bpffs directory, where the endpoint programs pinned the policy maps."""
    config: PolicyConfig = field(default_factory=PolicyConfig)
    interval: float = 0.2
    """Seconds between reconciler runs (new endpoints, retries); changes run at once."""
    node: str | None = None
    """This node's name: the repository computes the policies of its pods only (the others
    are peers); None computes every pod's."""


class PolicyEnforcement:
    """Policy repository + store watcher + policy-map reconciler of one agent.

    Args:
        params: pin directory, policy settings.
        store: the cluster store.
        allocator: the agent's identity allocator (started).
        local_endpoints: this node's endpoints as `namespace/pod` -> endpoint id.
    """

    def __init__(
        self,
        params: EnforcementParams,
        store: Store,
        allocator: IdentityAllocator,
        local_endpoints: Callable[[], dict[str, int]],
    ) -> None:
        self.params = params
        self._numbering = AllocatorNumbering(allocator)
        self.repo = Repository(params.config, self._numbering, node=params.node)
        self.cookies = Cookies()
        self._watcher = PolicyWatcher(store, self.repo)
        self._local = local_endpoints
        self._maps: PolicyMaps | None = None
        self._classes: CidrClasses | None = None
        self._raw: list[RawMap] = []
        self._synced: dict[int, EndpointPolicy] = {}
        self._keys: dict[int, str] = {}
        """Endpoint id -> `namespace/pod`, as of the last reconcile."""
        self._renumber = False
        self._refs: tuple[int, dict[str, PolicyRef]] = (-1, {})
        """Rule label -> its policy, as of a repository revision (for flow_policies)."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        allocator.subscribe(self._identities_changed)
        self.repo.subscribe(lambda _changed: self._wake.set())

    async def start(self) -> None:
        """Open the pinned maps (as they are: they keep enforcing), keep the CIDR class
        numbers they use, mirror the store, then reconcile once before returning."""
        names = (MAP_POLICY, MAP_POLICY_EP, MAP_POLICY_CIDR)
        self._raw = [RawMap.from_pin(self.params.pin_dir / n) for n in names]
        self._maps = PolicyMaps(self._raw[0], self._raw[1], self.cookies)
        self._classes = CidrClasses(self._raw[2])
        for prefix, numbers in self._classes.held().items():
            for labels, number in zip(cidr_class_labels(prefix), numbers, strict=True):
                self._numbering.keep(labels, number)
        await self._watcher.start()
        self.reconcile()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop watching and reconciling; the pinned maps keep their rows."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._watcher.stop()
        for raw in self._raw:
            raw.close()
        self._raw, self._maps, self._classes = [], None, None

    def reconcile(self) -> None:
        """Sync every local endpoint the repository knows, prune endpoints gone from the node."""
        if self._maps is None or self._classes is None:
            return
        if self._renumber:
            self._renumber = False
            self.repo.refresh()
        local = self._local()
        self._keys = {endpoint: key for key, endpoint in local.items()}
        known = self.repo.endpoints()
        for key, endpoint in local.items():
            if key not in known:
                continue  # its pod is not in the store (yet): the old rows stay
            policy = self.repo.policy(key)
            if self._synced.get(endpoint) is policy:
                continue
            try:
                self._maps.sync(endpoint, policy)
            except BpfError as exc:
                log.warning("policy of endpoint %d (%s) not written: %s", endpoint, key, exc)
                continue
            self._synced[endpoint] = policy
        self._classes.sync(self.repo.cidr_classes())
        for endpoint in self._maps.endpoints() - set(local.values()):
            self._maps.remove(endpoint)
            self._synced.pop(endpoint, None)

    async def prepare(self, endpoint: int, key: str, timeout: float = 2.0) -> None:
        """Write a new endpoint's policy before its programs pass traffic (Cilium regenerates
        an endpoint's policy before marking it ready): the datapath treats an endpoint without
        flags as unenforced. Waits up to `timeout` for the repository to learn the pod; if it
        does not, fails closed with both directions enforced and no allowed peer. With no
        policy in the cluster nothing can select the pod: nothing to write, no wait."""
        if self._maps is None or not self.repo.rules():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while key not in self.repo.endpoints() and loop.time() < deadline:
            await asyncio.sleep(0.02)  # the watcher is a task of this loop: let it run
        known = key in self.repo.endpoints()
        if known:
            policy = self.repo.policy(key)
        else:
            log.warning(
                "pod %s unknown to policy after %.1fs: endpoint %d denies all",
                key,
                timeout,
                endpoint,
            )
            policy = EndpointPolicy(0, frozenset({Direction.INGRESS, Direction.EGRESS}))
        self._maps.sync(endpoint, policy)
        if known:  # after the write: a failed one is retried by the next reconcile
            self._synced[endpoint] = policy
        self._keys[endpoint] = key

    def flow_policies(self, event: Event) -> tuple[Policy, ...]:
        """The policies behind an event's policy verdict, for Hubble's `*_allowed_by` /
        `*_denied_by`: the rules of the matched entry (its cookie), or for a default-deny drop
        the rules that isolate the endpoint in that direction."""
        labels = self.cookies.names(event.policy_cookie)
        key = self._keys.get(event.source)
        if not labels and event.policy_verdict is not PolicyVerdict.ALLOWED and key:
            direction = (
                Direction.INGRESS if event.direction is EventDirection.INGRESS else Direction.EGRESS
            )
            with contextlib.suppress(KeyError):
                labels = self.repo.policy(key).isolated_by.get(direction, ())
        if not labels:
            return ()
        refs = self._rule_refs()
        grouped: dict[PolicyRef, list[str]] = {}
        for label in labels:
            if label in refs:
                grouped.setdefault(refs[label], []).append(label)
        return tuple(
            Policy(ref.name, ref.namespace, ref.kind, tuple(names))
            for ref, names in sorted(grouped.items(), key=lambda item: str(item[0]))
        )

    def _rule_refs(self) -> dict[str, PolicyRef]:
        """Rule label -> policy, rebuilt only when the repository changed (not per event)."""
        revision, refs = self._refs
        if revision != self.repo.revision:
            rules = self.repo.rules().items()
            refs = {rule.label: ref for ref, rs in rules for rule in rs}
            self._refs = (self.repo.revision, refs)
        return refs

    def _identities_changed(self) -> None:
        self._renumber = True
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.params.interval)
            self._wake.clear()
            try:
                self.reconcile()
            except BpfError as exc:
                log.warning("policy maps: %s", exc)


def _key(raw: bytes) -> PolicyMapKey:
    return PolicyMapKey.from_buffer_copy(raw)
