"""The kubelet's work queue: one worker per key, no duplicates, re-adds during work kept."""

from __future__ import annotations

import asyncio

import pytest

from pylium.lab.workqueue import WorkQueue


async def test_a_key_waits_once_and_is_redone_if_added_while_active() -> None:
    q = WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b")
    assert await q.get() == "a"
    q.add("a")  # changed while being handled
    assert await q.get() == "b"
    q.done("b")
    q.done("a")
    assert await asyncio.wait_for(q.get(), 1) == "a"
    q.done("a")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(q.get(), 0.05)  # nothing left


async def test_retry_backs_off_exponentially_and_forget_resets() -> None:
    q = WorkQueue()
    assert [q.retry("a", base=0.01) for _ in range(3)] == [0.01, 0.02, 0.04]
    q.forget("a")
    assert q.retry("a", base=0.01) == 0.01
    assert await asyncio.wait_for(q.get(), 1) == "a"
