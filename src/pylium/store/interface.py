"""The cluster store interface: Kubernetes-shaped objects with list + watch and revisions.

Every backend (sqlite, later etcd and the Kubernetes API) implements `Store`. Objects are plain
dicts shaped as Kubernetes objects (`apiVersion`, `kind`, `metadata`, `spec`, `status`); the store
sets `metadata.resourceVersion`, `metadata.uid` and `metadata.creationTimestamp`.

Exceptions::

    StoreError
    ├── NotFound          the object does not exist (HTTP 404)
    ├── AlreadyExists     create of an existing object (HTTP 409)
    ├── Conflict          update whose resourceVersion is not the stored one (HTTP 409)
    └── Expired           watch from a revision that was compacted away (HTTP 410): relist
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Object = dict[str, Any]
"""A Kubernetes-shaped object."""

EventType = Literal["ADDED", "MODIFIED", "DELETED"]


class StoreError(Exception):
    """Base of every store error."""


class NotFound(StoreError):
    """The object does not exist."""


class AlreadyExists(StoreError):
    """An object with that kind, namespace and name exists already."""


class Conflict(StoreError):
    """The object changed since the caller read it (resourceVersion mismatch)."""


class Expired(StoreError):
    """The requested revision is older than the oldest one kept: list again, then watch."""


@dataclass(frozen=True)
class Key:
    """Identifies one object. Cluster-scoped kinds have namespace ""."""

    kind: str
    namespace: str
    name: str


@dataclass(frozen=True)
class Event:
    """One change, as a Kubernetes watch event. For DELETED, `object` is the last stored state."""

    type: EventType
    object: Object
    revision: int


class Store(Protocol):
    """List + watch over Kubernetes-shaped objects, shared by every process of a cluster."""

    async def get(self, kind: str, namespace: str, name: str) -> Object:
        """Return the object or raise NotFound."""
        ...

    async def list(self, kind: str, namespace: str | None = None) -> tuple[list[Object], int]:
        """All objects of a kind (in one namespace, or all when None) and the store revision
        they were read at; watch(kind, revision) then misses nothing."""
        ...

    async def create(self, obj: Object) -> Object:
        """Store a new object; raise AlreadyExists. Returns it with metadata filled in."""
        ...

    async def update(self, obj: Object) -> Object:
        """Replace an object. If obj carries metadata.resourceVersion it must match the stored
        one (else Conflict); raise NotFound if absent."""
        ...

    async def apply(
        self, obj: Object
    ) -> tuple[Object, Literal["created", "configured", "unchanged"]]:
        """Create or replace (kubectl apply): 'unchanged' when nothing differs."""
        ...

    async def delete(self, kind: str, namespace: str, name: str) -> Object:
        """Remove an object and return its last state; raise NotFound."""
        ...

    def watch(self, kind: str | None, since: int) -> AsyncIterator[Event]:
        """Changes after revision `since`, in order, forever (until the consumer stops).
        kind=None watches every kind. Raises Expired when `since` was compacted away."""
        ...

    async def revision(self) -> int:
        """The current store revision."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
