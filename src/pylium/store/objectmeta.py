"""Server-owned object metadata, the same in every backend.

A backend calls `key_of` to address an object, `stamp_new` when it creates one, and
`check_resource_version` + `keep_identity` when it replaces one; it sets
`metadata.resourceVersion` itself from its own revision counter.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime

from pylium.store.interface import Conflict, Key, Object, StoreError


def key_of(obj: Object) -> Key:
    """The key of an object; a missing namespace means cluster-scoped ("")."""
    kind = obj.get("kind")
    meta = obj.get("metadata")
    if not isinstance(kind, str) or not kind:
        raise StoreError("object has no kind")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise StoreError(f"{kind} has no metadata.name")
    return Key(kind, str(meta.get("namespace") or ""), meta["name"])


def describe(key: Key) -> str:
    """`Pod "ns/name"` or `Node "name"`, for error messages."""
    if key.namespace:
        return f'{key.kind} "{key.namespace}/{key.name}"'
    return f'{key.kind} "{key.name}"'


def stamp_new(obj: Object) -> Object:
    """A copy of obj with a fresh uid and creationTimestamp (a create)."""
    new = copy.deepcopy(obj)
    new["metadata"]["uid"] = str(uuid.uuid4())
    new["metadata"]["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return new


def keep_identity(obj: Object, stored: Object) -> Object:
    """A copy of obj carrying the stored object's uid and creationTimestamp (an update)."""
    new = copy.deepcopy(obj)
    new["metadata"]["uid"] = stored["metadata"]["uid"]
    new["metadata"]["creationTimestamp"] = stored["metadata"]["creationTimestamp"]
    return new


def check_resource_version(obj: Object, stored: Object) -> None:
    """Raise Conflict if obj names a resourceVersion other than the stored one."""
    wanted = obj["metadata"].get("resourceVersion")
    have = stored["metadata"]["resourceVersion"]
    if wanted and str(wanted) != have:
        raise Conflict(
            f"{describe(key_of(obj))}: resourceVersion {wanted} is stale (stored: {have})"
        )
