"""The ipcache table: claims per owner, source precedence, revisions, longest-prefix lookup."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv4Network

from pylium.ipcache import Entry, IPCacheTable, Source, diff

NET = IPv4Network("10.244.1.5/32")


def _entry(
    owner: str, identity: int, source: Source = Source.POD, prefix: str = "10.244.1.5/32"
) -> Entry:
    return Entry(IPv4Network(prefix), identity, None, "n1", source, owner)


def test_stronger_source_wins_and_the_weaker_returns_when_it_goes() -> None:
    """A node claim hides a pod claim of the same IP; withdrawing it shows the pod's again."""
    t = IPCacheTable()
    t.set_owner("pod/a/p", [_entry("pod/a/p", 300)])
    t.set_owner("node/n1", [_entry("node/n1", 6, Source.NODE)])
    assert t.get(NET) == _entry("node/n1", 6, Source.NODE)
    t.set_owner("pod/a/p", [])
    assert t.get(NET) == _entry("node/n1", 6, Source.NODE)
    t.set_owner("pod/a/p", [_entry("pod/a/p", 300)])
    t.set_owner("node/n1", [])
    assert t.get(NET) == _entry("pod/a/p", 300)


def test_latest_claim_wins_among_equal_sources() -> None:
    """An IP reused by a new pod before the old pod's delete arrives shows the new pod."""
    t = IPCacheTable()
    t.set_owner("pod/a/old", [_entry("pod/a/old", 300)])
    t.set_owner("pod/a/new", [_entry("pod/a/new", 301)])
    assert t.get(NET) == _entry("pod/a/new", 301)
    t.set_owner("pod/a/old", [])
    assert t.get(NET) == _entry("pod/a/new", 301)
    assert t.owned("pod/a/old") == []


def test_revision_moves_only_on_visible_changes() -> None:
    """Rewriting the same claim, or a hidden one, does not wake reconcilers."""
    t = IPCacheTable()
    t.set_owner("node/n1", [_entry("node/n1", 6, Source.NODE)])
    assert t.revision == 1
    t.set_owner("node/n1", [_entry("node/n1", 6, Source.NODE)])
    t.set_owner("pod/a/p", [_entry("pod/a/p", 300)])  # hidden under the node's claim
    assert t.revision == 1
    t.set_owner("node/n1", [])
    assert t.revision == 2


async def test_wait_changed_wakes_on_the_next_revision() -> None:
    """A reconciler waiting on the current revision wakes once an entry changes."""
    t = IPCacheTable()
    waiter = asyncio.create_task(t.wait_changed(t.revision))
    await asyncio.sleep(0)
    assert not waiter.done()
    t.set_owner("world", [_entry("world", 2, Source.GENERATED, "0.0.0.0/0")])
    assert await asyncio.wait_for(waiter, 5) == 1


def test_lookup_is_longest_prefix_match() -> None:
    """An address falls to the most specific prefix holding it, the world otherwise."""
    t = IPCacheTable()
    t.set_owner("world", [_entry("world", 2, Source.GENERATED, "0.0.0.0/0")])
    t.set_owner(
        "x",
        [
            _entry("x", 16777217, Source.GENERATED, "10.0.0.0/8"),
            _entry("x", 300, prefix="10.244.1.5/32"),
        ],
    )
    assert t.lookup(IPv4Address("10.244.1.5")).identity == 300  # type: ignore[union-attr]
    assert t.lookup(IPv4Address("10.9.9.9")).identity == 16777217  # type: ignore[union-attr]
    assert t.lookup(IPv4Address("8.8.8.8")).identity == 2  # type: ignore[union-attr]


def test_diff_lists_writes_and_deletes() -> None:
    """diff gives the entries to write (new or changed) and the prefixes to delete."""
    a, b = _entry("pod/a/p", 300), _entry("pod/a/q", 301, prefix="10.244.1.6/32")
    upserts, deletes = diff({a.prefix: a, b.prefix: b}, {a.prefix: _entry("pod/a/p", 302)})
    assert upserts == [_entry("pod/a/p", 302)]
    assert deletes == [b.prefix]
