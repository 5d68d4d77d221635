"""A reflector (Kubernetes informer): list + watch one kind into a local cache.

`events()` yields what a consumer needs to mirror the store: an ADDED per object of the initial
list, then every watched change. When the watch raises `Expired` (the consumer fell behind
compaction), it lists again and yields the difference against its cache as synthetic events:
DELETED for objects that vanished, ADDED for new ones and MODIFIED for changed ones, so the
consumer's view converges without missing a deletion.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from pylium.store.interface import Event, Expired, Object, Store

log = logging.getLogger(__name__)

CacheKey = tuple[str, str]
"""(namespace, name); namespace is "" for cluster-scoped kinds."""

Handler = Callable[[Event], Awaitable[None] | None]


def cache_key(obj: Object) -> CacheKey:
    """The cache key of an object."""
    meta = obj["metadata"]
    return str(meta.get("namespace") or ""), str(meta["name"])


class Reflector:
    """Mirror one kind (optionally one namespace) of a store.

    Args:
        store: the cluster store.
        kind: the kind to mirror, e.g. "Pod".
        namespace: only this namespace, or every one when None.
    """

    def __init__(self, store: Store, kind: str, namespace: str | None = None) -> None:
        self.store = store
        self.kind = kind
        self.namespace = namespace
        self.revision = 0
        """The store revision the cache reflects."""
        self.relists = 0
        """Lists done after the first because a watch expired."""
        self._cache: dict[CacheKey, Object] = {}
        self._synced = asyncio.Event()

    def get(self, namespace: str, name: str) -> Object | None:
        """The cached object, or None."""
        return self._cache.get((namespace, name))

    def items(self) -> list[Object]:
        """Every cached object, ordered by namespace and name."""
        return [self._cache[k] for k in sorted(self._cache)]

    async def wait_synced(self) -> None:
        """Return once the first list is in the cache."""
        await self._synced.wait()

    async def run(self, handler: Handler) -> None:
        """Call handler (sync or async) for every event of `events()`, until cancelled."""
        async for event in self.events():
            result = handler(event)
            if inspect.isawaitable(result):
                await result

    async def events(self) -> AsyncIterator[Event]:
        """The initial list as ADDED events, then changes; relists when the watch expires."""
        while True:
            for event in await self._relist():
                yield event
            try:
                async for event in self.store.watch(self.kind, self.revision):
                    self.revision = event.revision
                    if self._wanted(event.object):
                        self._apply(event)
                        yield event
                return  # the store closed
            except Expired as exc:
                self.relists += 1
                log.info(
                    "%s watch expired at revision %d (%s); relisting", self.kind, self.revision, exc
                )

    def _wanted(self, obj: Object) -> bool:
        return self.namespace is None or cache_key(obj)[0] == self.namespace

    def _apply(self, event: Event) -> None:
        key = cache_key(event.object)
        if event.type == "DELETED":
            self._cache.pop(key, None)
        else:
            self._cache[key] = event.object

    async def _relist(self) -> list[Event]:
        """List, replace the cache, and return the events that turn the old cache into it."""
        objects, revision = await self.store.list(self.kind, self.namespace)
        fresh = {cache_key(o): o for o in objects}
        events: list[Event] = []
        for key, old in sorted(self._cache.items()):
            if key not in fresh:
                events.append(Event(type="DELETED", object=old, revision=revision))
        for key, new in sorted(fresh.items()):
            cached = self._cache.get(key)
            if cached is None:
                events.append(Event(type="ADDED", object=new, revision=revision))
            elif cached["metadata"].get("resourceVersion") != new["metadata"].get(
                "resourceVersion"
            ):
                events.append(Event(type="MODIFIED", object=new, revision=revision))
        self._cache = fresh
        self.revision = revision
        self._synced.set()
        return events
