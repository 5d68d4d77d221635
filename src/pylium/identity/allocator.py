"""The identity allocator: labels -> numeric identity, the same on every node of a cluster.

Cluster-wide identities live in the store as CiliumIdentity objects named by their number (as
Cilium's CRD allocation mode). To allocate, an agent looks its label set up in a Reflector
cache of those objects; on a miss it creates the lowest id its cache shows free. The store's
create is the arbiter: AlreadyExists means someone took that id first, so the allocator reads
the winner and either adopts it (same labels) or moves on to the next id. Ids only ever hold
one label set, so two agents racing for the same labels both end on the lowest id holding
them: each skips only ids its cache shows holding other labels (adopting at once an id its
cache shows holding its own), and of two agents reaching a free id, one creates it and the
other finds it taken by the same labels.

Node-local identities (CIDR/FQDN labels, from 1 << 24) never leave the node and are numbered
here without the store. Reserved labels map to their fixed ids.

References are counted per process: `allocate` takes one, `release` drops one and frees a
node-local identity with its last reference. Cluster-wide objects are never deleted here;
garbage collection of identities no pod uses is the operator's job (as in Cilium).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from pylium.api import validate
from pylium.identity.labels import SOURCE_CIDR, SOURCE_FQDN, SOURCE_RESERVED, Labels
from pylium.identity.model import KIND, Identity, identity_from_object, identity_object
from pylium.identity.numeric import (
    MAX_CLUSTER_IDENTITY,
    MAX_LOCAL_IDENTITY,
    MIN_CLUSTER_IDENTITY,
    MIN_LOCAL_IDENTITY,
    reserved_identity,
    reserved_labels,
)
from pylium.store import AlreadyExists, Event, NotFound, Store
from pylium.store.reflector import Reflector

log = logging.getLogger(__name__)


class IdentityExhausted(Exception):
    """Every id of the range is taken."""


@dataclass(frozen=True)
class AllocatorParams:
    """The range cluster-wide ids come from (Cilium's default for cluster id 0)."""

    min_id: int = MIN_CLUSTER_IDENTITY
    max_id: int = MAX_CLUSTER_IDENTITY


class IdentityAllocator:
    """Allocate identities for label sets, cluster-wide through the store.

    Args:
        store: the cluster store holding CiliumIdentity objects.
        params: the id range.
    """

    def __init__(self, store: Store, params: AllocatorParams | None = None) -> None:
        self.params = params or AllocatorParams()
        if not 0 < self.params.min_id <= self.params.max_id < MIN_LOCAL_IDENTITY:
            raise ValueError(f"bad identity range {self.params}")
        self._store = store
        self._reflector = Reflector(store, KIND)
        self._by_id: dict[int, Identity] = {}
        self._by_key: dict[str, set[int]] = {}
        self._local: dict[str, Identity] = {}
        self._refs: dict[int, int] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener` after each change of the cluster-wide identities the cache holds."""
        self._listeners.append(listener)

    async def start(self) -> None:
        """Mirror the store's identities; returns once the first list is in."""
        self._task = asyncio.create_task(self._reflector.run(self._on_event))
        synced = asyncio.create_task(self._reflector.wait_synced())
        await asyncio.wait({self._task, synced}, return_when=asyncio.FIRST_COMPLETED)
        if not synced.done():
            synced.cancel()
            await self._task  # raises why the reflector ended

    async def stop(self) -> None:
        """Stop mirroring; returns once the reflector task has ended."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def lookup(self, labels: Labels) -> Identity | None:
        """The identity of a label set if one is known, without allocating."""
        reserved = reserved_identity(labels)
        if reserved is not None:
            return Identity(reserved, reserved_labels(reserved))
        if _is_local(labels):
            return self._local.get(labels.canonical())
        ids = self._by_key.get(labels.canonical())
        # Several ids for one label set only arise when a deleted id was reused in a race;
        # every node then picks the same one, the lowest.
        return self._by_id[min(ids)] if ids else None

    def get(self, identity: int) -> Identity | None:
        """A known cluster-wide or node-local identity by number."""
        found = self._by_id.get(identity)
        if found is None:
            found = next((i for i in self._local.values() if i.id == identity), None)
        return found

    def identities(self) -> list[Identity]:
        """Every cluster-wide identity the cache holds, by number."""
        return [self._by_id[i] for i in sorted(self._by_id)]

    def references(self) -> dict[int, int]:
        """Identity -> references this process holds."""
        return dict(self._refs)

    async def allocate(self, labels: Labels) -> Identity:
        """The identity of a label set, created if none exists; takes a reference.

        Raises:
            ValueError: empty labels, or reserved labels mixed with others.
            IdentityExhausted: no free id is left in the range.
            StoreError: the store failed (retry later).
        """
        if not labels:
            raise ValueError("cannot allocate an identity for no labels")
        found = self.lookup(labels)
        if found is None:
            if labels.has_source(SOURCE_RESERVED):
                raise ValueError(f"labels {labels} mix reserved and other labels")
            if _is_local(labels):
                found = self._allocate_local(labels)
            else:
                async with self._lock:
                    found = self.lookup(labels) or await self._allocate_cluster(labels)
        self._refs[found.id] = self._refs.get(found.id, 0) + 1
        return found

    def release(self, identity: Identity) -> bool:
        """Drop one reference; True when it was the last (a node-local id is then freed)."""
        count = self._refs.get(identity.id, 0)
        if count <= 0:
            raise ValueError(f"identity {identity.id} is not held")
        if count > 1:
            self._refs[identity.id] = count - 1
            return False
        del self._refs[identity.id]
        if _is_local(identity.labels):
            self._local.pop(identity.labels.canonical(), None)
        return True

    def _allocate_local(self, labels: Labels) -> Identity:
        used = {i.id for i in self._local.values()}
        number = next(
            (n for n in range(MIN_LOCAL_IDENTITY, MAX_LOCAL_IDENTITY + 1) if n not in used), None
        )
        if number is None:
            raise IdentityExhausted("no node-local identity left")
        identity = Identity(number, labels)
        self._local[labels.canonical()] = identity
        return identity

    async def _allocate_cluster(self, labels: Labels) -> Identity:
        candidate = self.params.min_id
        while True:
            # The reflector may have learned our labels' id while we waited on the store;
            # checked again before skipping the ids it knows, none of which then holds them.
            found = self.lookup(labels)
            if found is not None:
                return found
            candidate = self._next_free(candidate)
            try:
                created = await self._store.create(
                    validate(identity_object(Identity(candidate, labels)))
                )
            except AlreadyExists:
                try:
                    winner = identity_from_object(await self._store.get(KIND, "", str(candidate)))
                except NotFound:
                    continue  # deleted in between: the id is free again
                self._learn(winner)
                if winner.labels == labels:
                    return winner
                candidate += 1
                continue
            identity = identity_from_object(created)
            self._learn(identity)
            log.info("allocated identity %d for %s", identity.id, labels)
            return identity

    def _next_free(self, start: int) -> int:
        for number in range(start, self.params.max_id + 1):
            if number not in self._by_id:
                return number
        raise IdentityExhausted(
            f"every identity from {self.params.min_id} to {self.params.max_id} is taken"
        )

    def _learn(self, identity: Identity) -> None:
        self._forget(identity.id)
        self._by_id[identity.id] = identity
        self._by_key.setdefault(identity.labels.canonical(), set()).add(identity.id)

    def _forget(self, number: int) -> None:
        old = self._by_id.pop(number, None)
        if old is not None:
            ids = self._by_key[old.labels.canonical()]
            ids.discard(number)
            if not ids:
                del self._by_key[old.labels.canonical()]

    def _on_event(self, event: Event) -> None:
        try:
            identity = identity_from_object(event.object)
        except (KeyError, ValueError) as exc:
            log.warning("ignoring malformed %s %s: %s", KIND, event.object.get("metadata"), exc)
            return
        if event.type == "DELETED":
            self._forget(identity.id)
        else:
            self._learn(identity)
        for listener in self._listeners:
            listener()


def _is_local(labels: Labels) -> bool:
    """CIDR and FQDN identities are node-local, as in Cilium."""
    return labels.has_source(SOURCE_CIDR, SOURCE_FQDN)
