"""The etcd v3 backend of the cluster store, for clusters spanning several hosts.

Key layout (ROOT is the URL's path, empty by default)::

    ROOT/pylium/v1/<Kind>/<namespace>/<name>     a namespaced object
    ROOT/pylium/v1/<Kind>/_cluster/<name>        a cluster-scoped object

`_cluster` cannot clash with a namespace: namespace names are DNS labels, which have no `_`.
A value is the object as compact JSON *without* `metadata.resourceVersion`: the resourceVersion
is the key's etcd `mod_revision`, stamped on every read, since a value cannot hold the revision
its own write gets. The store revision is etcd's revision, so `list` returns the header revision
of its range read and `watch(kind, r)` is an etcd watch from r + 1.

Writes are single-key transactions: create puts if `create_revision == 0`; update and apply read
the key and put if its `mod_revision` is still the one read (a caller without resourceVersion
gets a retry instead of a Conflict); delete is a delete with `prev_kv`, whose previous value
becomes the DELETED object, stamped with the deletion's revision (as watch events are).

A watch asks etcd for `prev_kv` so DELETED events carry the last state. When the connection drops
(etcd restarted, a network blip) the watch reconnects with backoff and resumes after the last
revision it delivered, so the consumer misses nothing; a revision etcd compacted away raises
`Expired` (list again).

The client is aetcd (asyncio over grpcio). Several endpoints become one gRPC channel over all
their addresses (grpc's pick_first fails over between them), which needs IP addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import aetcd
import aetcd.rpc
from aetcd.exceptions import ClientError, RevisionCompactedError
from aetcd.rtypes import EventKind

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

log = logging.getLogger(__name__)

T = TypeVar("T")
Endpoint = tuple[str, int]
"""(host, port) of one etcd client URL."""

DEFAULT_PORT = 2379
CLUSTER_SCOPED = "_cluster"
"""The namespace segment of cluster-scoped objects' keys."""

DEFAULT_TIMEOUT = 10.0
"""Seconds a request (or a watch's creation) may take before it fails."""

_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 2.0
"""Seconds between a watch's reconnection attempts: doubling from min up to max."""

_CHANNEL_OPTIONS = {
    # A list of every object of a kind can exceed grpc's 4 MiB default.
    "grpc.max_receive_message_length": -1,
    # grpc waits up to 120 s between reconnects by default; a restarted etcd is back in seconds.
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": int(_BACKOFF_MAX * 1000),
    # Notice a silent peer (no RST, e.g. a partition) on a long-lived watch; etcd refuses pings
    # more often than every 5 s.
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
}


def parse_url(rest: str) -> tuple[list[Endpoint], str]:
    """Endpoints and key root of an `etcd://` URL without its scheme.

    `HOST[:PORT][,HOST[:PORT]...][/ROOT]`; IPv6 hosts in brackets. Raises ValueError.
    """
    netloc, slash, path = rest.partition("/")
    endpoints: list[Endpoint] = []
    for item in netloc.split(","):
        if item.startswith("["):
            host, _, tail = item[1:].partition("]")
            port_text = tail.removeprefix(":")
        else:
            host, colon, port_text = item.partition(":")
            if not colon:
                port_text = ""
        if not host:
            raise ValueError(f"etcd endpoint {item!r} has no host")
        try:
            port = int(port_text) if port_text else DEFAULT_PORT
        except ValueError:
            raise ValueError(f"etcd endpoint {item!r}: port is not a number") from None
        endpoints.append((host, port))
    root = ("/" + path.strip("/")) if slash and path.strip("/") else ""
    return endpoints, root


def grpc_target(endpoints: Sequence[Endpoint]) -> str:
    """The gRPC target naming every endpoint: `host:port` for one, `ipv4:a:p,b:q` (or
    `ipv6:[a]:p,...`) for several. Raises ValueError for several that are not all IP
    addresses of one family."""
    if len(endpoints) == 1:
        host, port = endpoints[0]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        versions = {ipaddress.ip_address(host).version for host, _ in endpoints}
    except ValueError:
        raise ValueError("several etcd endpoints must be IP addresses, not host names") from None
    if versions == {4}:
        return "ipv4:" + ",".join(f"{host}:{port}" for host, port in endpoints)
    if versions == {6}:
        return "ipv6:" + ",".join(f"[{host}]:{port}" for host, port in endpoints)
    raise ValueError("several etcd endpoints must all be IPv4 or all IPv6")


@contextmanager
def _etcd_errors() -> Iterator[None]:
    """Turn the client's errors into StoreError, so callers catch one tree."""
    try:
        yield
    except aetcd.rpc.AioRpcError as exc:
        raise StoreError(f"etcd: {exc.code().name}: {exc.details()}") from exc
    except ClientError as exc:
        raise StoreError(f"etcd: {type(exc).__name__}: {exc}") from exc


class EtcdStore:
    """The `Store` protocol over etcd v3.

    Args:
        endpoints: etcd client endpoints, (host, port) each.
        root: key prefix in front of `/pylium/v1/` ("" or "/something"), to share an etcd.
        timeout: seconds a request may take.

    Raises:
        ValueError: no endpoint, or several that `grpc_target` cannot join.
    """

    def __init__(
        self, endpoints: Sequence[Endpoint], root: str = "", timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint given")
        self.endpoints = list(endpoints)
        self.prefix = f"{root.rstrip('/')}/pylium/v1/".encode()
        self.timeout = timeout
        # aetcd joins host and port into the gRPC target as f"{host}:{port}"; splitting our target
        # at its last colon hands it several endpoints. The client connects on first use.
        host, _, port = grpc_target(self.endpoints).rpartition(":")
        self._client = aetcd.Client(host, int(port), timeout=timeout, options=_CHANNEL_OPTIONS)
        self._closed = False

    @classmethod
    def from_url(cls, rest: str) -> EtcdStore:
        """The store an `etcd://` URL names (see `parse_url`); ValueError if malformed."""
        endpoints, root = parse_url(rest)
        return cls(endpoints, root)

    # -- keys and values ---------------------------------------------------------------------

    def _key(self, key: Key) -> bytes:
        namespace = key.namespace or CLUSTER_SCOPED
        return self.prefix + f"{key.kind}/{namespace}/{key.name}".encode()

    def _kind_prefix(self, kind: str | None, namespace: str | None = None) -> bytes:
        if kind is None:
            return self.prefix
        if namespace is None:
            return self.prefix + f"{kind}/".encode()
        return self.prefix + f"{kind}/{namespace or CLUSTER_SCOPED}/".encode()

    @staticmethod
    def _encode(obj: Object) -> bytes:
        meta = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
        return json.dumps({**obj, "metadata": meta}, separators=(",", ":"), sort_keys=True).encode()

    @staticmethod
    def _decode(value: bytes, revision: int) -> Object:
        obj: Object = json.loads(value)
        obj["metadata"]["resourceVersion"] = str(revision)
        return obj

    @staticmethod
    def _stamped(obj: Object, revision: int) -> Object:
        meta = {**obj["metadata"], "resourceVersion": str(revision)}
        return {**obj, "metadata": meta}

    # -- plumbing ----------------------------------------------------------------------------

    async def _call(self, fn: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        if self._closed:
            raise StoreError("store is closed")
        with _etcd_errors():
            return await fn(self._client)

    async def _read(self, key: Key) -> tuple[Object, int] | None:
        """The stored object and its mod_revision, or None."""
        kv = await self._call(lambda c: c.get(self._key(key)))
        if kv is None:
            return None
        return self._decode(kv.value, kv.mod_revision), kv.mod_revision

    async def _put_if(self, key: Key, obj: Object, mod_revision: int) -> int | None:
        """Put obj if the key's mod_revision is `mod_revision` (0: the key is absent); the new
        revision, or None if the key changed meanwhile."""
        k = self._key(key)
        value = self._encode(obj)

        async def txn(c: aetcd.Client) -> tuple[bool, list[Any]]:
            t = c.transactions
            guard = t.create(k) == 0 if mod_revision == 0 else t.mod(k) == mod_revision
            result: tuple[bool, list[Any]] = await c.transaction(
                compare=[guard], success=[t.put(k, value)], failure=[]
            )
            return result

        succeeded, responses = await self._call(txn)
        if not succeeded:
            return None
        revision: int = responses[0].response_put.header.revision
        return revision

    # -- Store protocol ----------------------------------------------------------------------

    async def get(self, kind: str, namespace: str, name: str) -> Object:
        """Return the object or raise NotFound."""
        key = Key(kind, namespace, name)
        found = await self._read(key)
        if found is None:
            raise NotFound(f"{describe(key)} not found")
        return found[0]

    async def list(self, kind: str, namespace: str | None = None) -> tuple[list[Object], int]:
        """All objects of a kind (in one namespace or all) and the revision they were read at."""
        result = await self._call(lambda c: c.get_prefix(self._kind_prefix(kind, namespace)))
        objects = [self._decode(kv.value, kv.mod_revision) for kv in result.kvs]
        # Key order puts "a-b/" before "a/"; sort as the sqlite backend does.
        objects.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        revision: int = result.header.revision
        return objects, revision

    async def create(self, obj: Object) -> Object:
        """Store a new object; raise AlreadyExists."""
        key = key_of(obj)
        new = stamp_new(obj)
        revision = await self._put_if(key, new, 0)
        if revision is None:
            raise AlreadyExists(f"{describe(key)} already exists")
        return self._stamped(new, revision)

    async def update(self, obj: Object) -> Object:
        """Replace an object, checking metadata.resourceVersion when given."""
        key = key_of(obj)
        while True:
            found = await self._read(key)
            if found is None:
                raise NotFound(f"{describe(key)} not found")
            old, mod_revision = found
            check_resource_version(obj, old)
            new = keep_identity(obj, old)
            revision = await self._put_if(key, new, mod_revision)
            if revision is not None:
                return self._stamped(new, revision)

    async def apply(self, obj: Object) -> tuple[Object, ApplyResult]:
        """Create, or three-way merge into the stored object (kubectl apply; see applyset)."""
        key = key_of(obj)
        while True:
            found = await self._read(key)
            live, mod_revision = found if found is not None else (None, 0)
            new, result = apply_to(live, obj)
            if result == "unchanged":
                return new, result
            revision = await self._put_if(key, new, mod_revision)
            if revision is not None:
                return self._stamped(new, revision), result

    async def delete(self, kind: str, namespace: str, name: str) -> Object:
        """Remove an object and return its last state (resourceVersion = the deletion's)."""
        key = Key(kind, namespace, name)
        deleted = await self._call(lambda c: c.delete(self._key(key), prev_kv=True))
        if deleted is None:
            raise NotFound(f"{describe(key)} not found")
        return self._decode(deleted.prev_kv.value, deleted.header.revision)

    async def watch(self, kind: str | None, since: int) -> AsyncIterator[Event]:
        """Changes after revision `since`, in order, until the consumer stops or the store
        closes; resumes after the last delivered revision if the connection drops. Raises
        Expired when the next revision to deliver was compacted away."""
        prefix = self._kind_prefix(kind)
        position = since
        attempt = 0
        while not self._closed:
            try:
                async for event in self._watch_stream(prefix, position):
                    position = event.revision
                    attempt = 0
                    yield event
            except RevisionCompactedError as exc:
                raise Expired(
                    f"revision {position} is compacted (oldest watchable: {exc.compacted_revision})"
                ) from exc
            except ClientError as exc:
                if self._closed:
                    return
                delay = min(_BACKOFF_MAX, _BACKOFF_MIN * 2**attempt)
                attempt += 1
                log.warning(
                    "etcd watch after revision %d lost (%s); resuming in %.2fs",
                    position,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _watch_stream(self, prefix: bytes, position: int) -> AsyncIterator[Event]:
        """One etcd watch from position + 1; ends when the client closes, raises ClientError
        when the stream breaks."""
        watch = await self._client.watch_prefix(prefix, start_revision=position + 1, prev_kv=True)
        try:
            async for raw in watch:
                yield self._event(raw)
        finally:
            await watch.cancel()

    def _event(self, raw: Any) -> Event:
        revision: int = raw.kv.mod_revision
        if raw.kind == EventKind.DELETE:
            if raw.prev_kv is None:
                # etcd keeps each key's last version through compaction, so this means the
                # history is gone: the consumer must relist.
                raise Expired(f"revision {revision}: the deleted object's last state is compacted")
            return Event("DELETED", self._decode(raw.prev_kv.value, revision), revision)
        type_: EventType = "ADDED" if raw.kv.create_revision == revision else "MODIFIED"
        return Event(type_, self._decode(raw.kv.value, revision), revision)

    async def revision(self) -> int:
        """The current store revision (the header of a one-key read)."""

        async def read(c: aetcd.Client) -> int:
            await c.connect()
            response = await c.kvstub.Range(
                aetcd.rpc.RangeRequest(key=self.prefix), timeout=self.timeout
            )
            value: int = response.header.revision
            return value

        return await self._call(read)

    async def close(self) -> None:
        """Close the connection; running watches end."""
        if self._closed:
            return
        self._closed = True
        with _etcd_errors():
            await self._client.close()
