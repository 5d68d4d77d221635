"""The ring of recent flows is bounded; slow followers lose flows and the loss is counted."""

from __future__ import annotations

import asyncio

import pytest

from pylium.hubble.ring import FlowRing
from tests.unit.hubble.flows import T0, make_flow


def flows(n: int, start: int = 0):
    return [make_flow(time_ns=T0 + i, uuid=str(i)) for i in range(start, start + n)]


def uuids(items) -> list[str]:
    return [f.uuid for f in items]


def test_that_the_ring_keeps_only_the_newest_flows():
    ring = FlowRing(capacity=3)
    for flow in flows(5):
        ring.append(flow)
    assert len(ring) == 3 and ring.seen == 5
    assert uuids(ring) == ["2", "3", "4"]
    assert uuids(ring.last(2)) == ["3", "4"]
    assert uuids(ring.last(10)) == ["2", "3", "4"]
    assert ring.last(0) == []


def test_that_since_returns_flows_at_or_after_a_time():
    ring = FlowRing(capacity=10)
    for flow in flows(5):
        ring.append(flow)
    assert uuids(ring.since(T0 + 3)) == ["3", "4"]
    assert uuids(ring.since(T0 + 99)) == []
    assert uuids(ring.since(0)) == ["0", "1", "2", "3", "4"]


async def test_that_a_follower_gets_new_flows_in_order_until_closed():
    ring = FlowRing(capacity=10)
    ring.append(make_flow(uuid="old"))
    follower = ring.follow()
    for flow in flows(3):
        ring.append(flow)
    follower.close()
    assert [f.uuid async for f in follower] == ["0", "1", "2"]
    ring.append(make_flow(uuid="after"))  # no longer delivered
    assert await follower.get() is None


async def test_that_a_slow_follower_loses_flows_and_they_are_counted():
    ring = FlowRing(capacity=100, queue_size=4)
    slow, fast = ring.follow(), ring.follow(queue_size=100)
    for flow in flows(10):
        ring.append(flow)
    assert (slow.lost, fast.lost) == (6, 0)
    assert ring.follower_lost == 6
    assert uuids([await slow.get() for _ in range(4)]) == ["0", "1", "2", "3"]
    ring.append(make_flow(uuid="10"))  # room again: delivered
    assert (await slow.get()).uuid == "10"
    assert slow.lost == 6


async def test_that_closing_the_ring_ends_a_waiting_follower():
    ring = FlowRing()
    follower = ring.follow()
    waiter = asyncio.ensure_future(follower.get())
    await asyncio.sleep(0)
    ring.close()
    assert await asyncio.wait_for(waiter, 1) is None


def test_that_sizes_must_be_positive():
    with pytest.raises(ValueError):
        FlowRing(capacity=0)
