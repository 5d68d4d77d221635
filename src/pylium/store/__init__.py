"""The cluster store: Kubernetes-shaped objects with list + watch and revisions (DESIGN §2).

`open_store(url)` picks the backend from the URL; callers then use only the `Store` protocol.
"""

from __future__ import annotations

from pylium.store.interface import (
    AlreadyExists,
    Conflict,
    Event,
    EventType,
    Expired,
    Key,
    NotFound,
    Object,
    Store,
    StoreError,
)

__all__ = [
    "AlreadyExists",
    "Conflict",
    "Event",
    "EventType",
    "Expired",
    "Key",
    "NotFound",
    "Object",
    "Store",
    "StoreError",
    "UnsupportedStoreURL",
    "open_store",
]


class UnsupportedStoreURL(StoreError):
    """The store URL names no backend this build knows."""


def open_store(url: str) -> Store:
    """Open the store a URL names.

    Args:
        url: `sqlite:///abs/path/store.db` (the file and its tables are created if absent), or
            `etcd://HOST:PORT[,HOST:PORT...][/ROOT]` (keys under ROOT/pylium/v1/; several
            endpoints must be IP addresses).

    Raises:
        UnsupportedStoreURL: for any other scheme, a relative sqlite path or a malformed etcd
            URL.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise UnsupportedStoreURL(f"store URL {url!r} has no scheme; use sqlite:///abs/path.db")
    if scheme == "sqlite":
        if not rest.startswith("/"):
            raise UnsupportedStoreURL(
                f"store URL {url!r}: the sqlite path must be absolute (sqlite:///abs/path.db)"
            )
        from pylium.store.sqlite import SqliteStore

        return SqliteStore(rest)
    if scheme == "etcd":
        from pylium.store.etcd import EtcdStore

        try:
            return EtcdStore.from_url(rest)
        except ValueError as exc:
            raise UnsupportedStoreURL(f"store URL {url!r}: {exc}") from None
    raise UnsupportedStoreURL(
        f"store URL {url!r}: unknown scheme {scheme!r}"
        " (supported: sqlite:///abs/path.db, etcd://HOST:PORT)"
    )
