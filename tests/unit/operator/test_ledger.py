"""The pod CIDR ledger on real stores (sqlite and etcd): CAS keeps two operators from handing
out one subnet twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest

from pylium.operator.ledger import KIND, NAME, CIDRLedger
from pylium.operator.podcidr import PoolExhausted, parse_pools
from pylium.store import Conflict, Object, Store, open_store
from tests.unit.store.etcd_server import ETCD, EtcdServer

POOLS = parse_pools(["10.244.0.0/16"], 24)


@pytest.fixture(params=["sqlite", "etcd"])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Store, Store]]:
    """Two connections to one store, as two operator processes would hold: one sqlite file, or
    one etcd on loopback."""
    server: EtcdServer | None = None
    if request.param == "sqlite":
        url = f"sqlite://{tmp_path}/s.db"
    else:
        if ETCD is None:
            pytest.skip("needs the etcd binary (Debian's etcd-server)")
        server = EtcdServer(tmp_path / "etcd")
        server.base.mkdir()
        server.start()
        url = server.url("/ledger")
    a, b = open_store(url), open_store(url)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()
        if server is not None:
            server.stop()


class BeforeUpdate:
    """A store whose first update first runs `hook` (another writer sneaking in) and that
    counts the Conflicts it passes on."""

    def __init__(self, inner: Store, hook: Callable[[], Awaitable[Any]]) -> None:
        self._inner = inner
        self._hook: Callable[[], Awaitable[Any]] | None = hook
        self.conflicts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def update(self, obj: Object) -> Object:
        if self._hook is not None:
            hook, self._hook = self._hook, None
            await hook()
        try:
            return await self._inner.update(obj)
        except Conflict:
            self.conflicts += 1
            raise


async def test_assign_records_in_the_ledger_object(stores):
    """Assignments land in PodCIDRPool "cluster-pool" status.allocated; asking again is
    answered from it without a write."""
    store, _ = stores
    ledger = CIDRLedger(store, POOLS, 24)
    assert str(await ledger.assign("n1")) == "10.244.0.0/24"
    assert str(await ledger.assign("n2")) == "10.244.1.0/24"
    obj = await store.get(KIND, "", NAME)
    assert obj["status"]["allocated"] == {"10.244.0.0/24": "n1", "10.244.1.0/24": "n2"}
    assert obj["spec"] == {"ipv4": {"cidrs": ["10.244.0.0/16"], "maskSize": 24}}
    revision = await store.revision()
    assert str(await ledger.assign("n1")) == "10.244.0.0/24"
    assert await store.revision() == revision


async def test_interleaved_writer_forces_a_retry_not_a_duplicate(stores):
    """Operator A reads the ledger, operator B assigns 10.244.0.0/24 before A writes: A's write
    conflicts, A recomputes on B's state and takes the next subnet."""
    store_a, store_b = stores
    ledger_b = CIDRLedger(store_b, POOLS, 24)
    await ledger_b.assign("seed")  # the ledger exists, so A's first write is an update
    racing = BeforeUpdate(store_a, lambda: ledger_b.assign("node-b"))
    ledger_a = CIDRLedger(racing, POOLS, 24)
    got_a = await ledger_a.assign("node-a")
    assert racing.conflicts == 1
    assert await ledger_b.assignments() == {
        "10.244.0.0/24": "seed",
        "10.244.1.0/24": "node-b",
        "10.244.2.0/24": "node-a",
    }
    assert got_a == IPv4Network("10.244.2.0/24")


async def test_two_operators_racing_hand_out_distinct_subnets(stores):
    """40 nodes assigned concurrently by two ledgers on two connections: 40 distinct subnets,
    each node's answer equal to what the ledger recorded."""
    store_a, store_b = stores
    ledgers = [CIDRLedger(store_a, POOLS, 24), CIDRLedger(store_b, POOLS, 24)]
    nodes = [f"n{i}" for i in range(40)]
    got = await asyncio.gather(*(ledgers[i % 2].assign(n) for i, n in enumerate(nodes)))
    recorded = await ledgers[0].assignments()
    assert len(set(got)) == 40
    assert recorded == {str(c): n for c, n in zip(got, nodes, strict=True)}


async def test_release_and_prune(stores):
    """release frees one node's subnet; release_all_but frees those of nodes not listed."""
    store, _ = stores
    ledger = CIDRLedger(store, POOLS, 24)
    for node in ("a", "b", "c"):
        await ledger.assign(node)
    assert await ledger.release("b") == [IPv4Network("10.244.1.0/24")]
    assert await ledger.release_all_but({"c"}) == {"10.244.0.0/24": "a"}
    assert await ledger.assignments() == {"10.244.2.0/24": "c"}


async def test_exhaustion_writes_nothing(stores):
    """PoolExhausted propagates and leaves the ledger as it was."""
    store, _ = stores
    ledger = CIDRLedger(store, parse_pools(["10.244.0.0/24"], 25), 25)
    await ledger.assign("a")
    await ledger.assign("b")
    with pytest.raises(PoolExhausted):
        await ledger.assign("c")
    assert await ledger.assignments() == {"10.244.0.0/25": "a", "10.244.0.128/25": "b"}
