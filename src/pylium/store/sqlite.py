"""The embedded cluster store: one sqlite file shared by every process of a lab.

Layout: `objects` holds the current state of every object keyed by (kind, namespace, name);
`changes` is the change log, one row per write keyed by the global revision; `meta` holds the
current revision and the compaction mark (every change at or below it is gone). Each write runs
in a `BEGIN IMMEDIATE` transaction, which takes sqlite's write lock up front, so writers in
several processes serialise and every revision is unique. WAL mode lets readers and watchers
proceed while one process writes.

sqlite3 calls block, so they run in a worker thread (`asyncio.to_thread`) and never stall the
caller's event loop while another process holds the write lock.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import astuple
from pathlib import Path
from typing import TypeVar, cast

from pylium.store.applyset import ApplyResult, apply_to
from pylium.store.interface import (
    AlreadyExists,
    Event,
    EventType,
    Expired,
    Key,
    NotFound,
    Object,
    StoreError,
)
from pylium.store.objectmeta import (
    check_resource_version,
    describe,
    keep_identity,
    key_of,
    stamp_new,
)

T = TypeVar("T")
_Rows = list[tuple[int, str, str]]
"""Change-log rows: (revision, event type, object JSON)."""

DEFAULT_KEEP_CHANGES = 10_000
"""Change-log entries kept; a watch from an older revision raises Expired."""

DEFAULT_POLL_INTERVAL = 0.03
"""Seconds between change-log polls of a watch."""

_WATCH_BATCH = 500
"""Changes fetched per poll; a watcher far behind catches up over several polls."""

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS objects (
        kind TEXT NOT NULL,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        revision INTEGER NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (kind, namespace, name))""",
    """CREATE TABLE IF NOT EXISTS changes (
        revision INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        type TEXT NOT NULL,
        data TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS changes_kind ON changes (kind, revision)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0), ('compacted', 0)",
)


class SqliteStore:
    """The `Store` protocol over one sqlite database file.

    Args:
        path: the database file; created (with its tables) if absent.
        keep_changes: change-log entries to keep before compaction.
        poll_interval: seconds between change-log polls of a watch.
    """

    def __init__(
        self,
        path: str | Path,
        keep_changes: int = DEFAULT_KEEP_CHANGES,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        self.path = Path(path)
        self.keep_changes = keep_changes
        self.poll_interval = poll_interval
        # One connection shared by the worker threads; the lock keeps one call on it at a time.
        self._conn = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        self._closed = False
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self._lock:
            self._write_txn(self._create_schema)

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        for statement in _SCHEMA:
            conn.execute(statement)

    # -- plumbing ----------------------------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise StoreError("store is closed")
        return await asyncio.to_thread(self._locked, fn)

    def _locked(self, fn: Callable[[], T]) -> T:
        with self._lock:
            if self._closed:
                raise StoreError("store is closed")
            return fn()

    def _write_txn(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run body in a write transaction (the caller holds self._lock)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _read_txn(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run body in one read transaction, so every query sees the same snapshot."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            return body(conn)
        finally:
            conn.execute("COMMIT")

    def _load(self, conn: sqlite3.Connection, key: Key) -> Object:
        row = conn.execute(
            "SELECT data FROM objects WHERE kind=? AND namespace=? AND name=?", astuple(key)
        ).fetchone()
        if row is None:
            raise NotFound(f"{describe(key)} not found")
        obj: Object = json.loads(row[0])
        return obj

    def _record(self, conn: sqlite3.Connection, type_: EventType, obj: Object) -> Object:
        """Bump the revision, stamp obj with it, write obj and the change; compact the log."""
        revision: int = conn.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0]
        revision += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(revision)
        kind, namespace, name = astuple(key_of(obj))
        data = json.dumps(obj, separators=(",", ":"), sort_keys=True)
        conn.execute("UPDATE meta SET value=? WHERE key='revision'", (revision,))
        if type_ == "DELETED":
            conn.execute(
                "DELETE FROM objects WHERE kind=? AND namespace=? AND name=?",
                (kind, namespace, name),
            )
        else:
            conn.execute(
                "INSERT OR REPLACE INTO objects (kind, namespace, name, revision, data)"
                " VALUES (?, ?, ?, ?, ?)",
                (kind, namespace, name, revision, data),
            )
        conn.execute(
            "INSERT INTO changes (revision, kind, type, data) VALUES (?, ?, ?, ?)",
            (revision, kind, type_, data),
        )
        horizon = revision - self.keep_changes
        if horizon > 0:
            conn.execute("DELETE FROM changes WHERE revision <= ?", (horizon,))
            conn.execute("UPDATE meta SET value=max(value, ?) WHERE key='compacted'", (horizon,))
        return obj

    # -- Store protocol ----------------------------------------------------------------------

    async def get(self, kind: str, namespace: str, name: str) -> Object:
        """Return the object or raise NotFound."""
        return await self._run(lambda: self._load(self._conn, Key(kind, namespace, name)))

    async def list(self, kind: str, namespace: str | None = None) -> tuple[list[Object], int]:
        """All objects of a kind (in one namespace or all) and the revision they were read at."""

        def body(conn: sqlite3.Connection) -> tuple[list[Object], int]:
            revision: int = conn.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[
                0
            ]
            if namespace is None:
                rows = conn.execute(
                    "SELECT data FROM objects WHERE kind=? ORDER BY namespace, name", (kind,)
                )
            else:
                rows = conn.execute(
                    "SELECT data FROM objects WHERE kind=? AND namespace=? ORDER BY name",
                    (kind, namespace),
                )
            return [json.loads(r[0]) for r in rows], revision

        return await self._run(lambda: self._read_txn(body))

    async def create(self, obj: Object) -> Object:
        """Store a new object; raise AlreadyExists."""
        key = key_of(obj)

        def body(conn: sqlite3.Connection) -> Object:
            if conn.execute(
                "SELECT 1 FROM objects WHERE kind=? AND namespace=? AND name=?", astuple(key)
            ).fetchone():
                raise AlreadyExists(f"{describe(key)} already exists")
            return self._record(conn, "ADDED", stamp_new(obj))

        return await self._run(lambda: self._write_txn(body))

    async def update(self, obj: Object) -> Object:
        """Replace an object, checking metadata.resourceVersion when given."""
        key = key_of(obj)

        def body(conn: sqlite3.Connection) -> Object:
            old = self._load(conn, key)
            check_resource_version(obj, old)
            return self._record(conn, "MODIFIED", keep_identity(obj, old))

        return await self._run(lambda: self._write_txn(body))

    async def apply(self, obj: Object) -> tuple[Object, ApplyResult]:
        """Create, or three-way merge into the stored object (kubectl apply; see applyset):
        fields controllers wrote, such as `status`, survive a re-apply."""
        key = key_of(obj)

        def body(conn: sqlite3.Connection) -> tuple[Object, ApplyResult]:
            try:
                old: Object | None = self._load(conn, key)
            except NotFound:
                old = None
            new, result = apply_to(old, obj)
            if result == "created":
                return self._record(conn, "ADDED", new), result
            if result == "configured":
                return self._record(conn, "MODIFIED", new), result
            return new, result

        return await self._run(lambda: self._write_txn(body))

    async def delete(self, kind: str, namespace: str, name: str) -> Object:
        """Remove an object and return its last state (resourceVersion = the deletion's)."""

        def body(conn: sqlite3.Connection) -> Object:
            return self._record(conn, "DELETED", self._load(conn, Key(kind, namespace, name)))

        return await self._run(lambda: self._write_txn(body))

    def _changes_after(self, kind: str | None, since: int) -> _Rows:
        """Up to _WATCH_BATCH changes after `since`; Expired if some were compacted away."""

        def body(conn: sqlite3.Connection) -> _Rows:
            compacted: int = conn.execute(
                "SELECT value FROM meta WHERE key='compacted'"
            ).fetchone()[0]
            if since < compacted:
                raise Expired(f"revision {since} is compacted (oldest watchable: {compacted})")
            if kind is None:
                cur = conn.execute(
                    "SELECT revision, type, data FROM changes WHERE revision > ?"
                    " ORDER BY revision LIMIT ?",
                    (since, _WATCH_BATCH),
                )
            else:
                cur = conn.execute(
                    "SELECT revision, type, data FROM changes WHERE kind = ? AND revision > ?"
                    " ORDER BY revision LIMIT ?",
                    (kind, since, _WATCH_BATCH),
                )
            return list(cur)

        return self._read_txn(body)

    async def watch(self, kind: str | None, since: int) -> AsyncIterator[Event]:
        """Changes after revision `since`, in order, until the consumer stops or the store
        closes. Raises Expired when `since` (or a lagging watcher's position) is compacted."""
        position = since
        while True:
            try:
                rows = await self._run(functools.partial(self._changes_after, kind, position))
            except StoreError:
                if self._closed:
                    return
                raise
            for revision, type_, data in rows:
                position = revision
                yield Event(type=cast(EventType, type_), object=json.loads(data), revision=revision)
            if len(rows) < _WATCH_BATCH:
                await asyncio.sleep(self.poll_interval)

    async def revision(self) -> int:
        """The current store revision."""

        def body() -> int:
            value: int = self._conn.execute(
                "SELECT value FROM meta WHERE key='revision'"
            ).fetchone()[0]
            return value

        return await self._run(body)

    async def close(self) -> None:
        """Close the connection; running watches end after their current poll."""
        if self._closed:
            return
        with self._lock:
            self._closed = True
            self._conn.close()
