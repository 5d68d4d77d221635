"""A bounded ring of recent flows, with followers fed through bounded asyncio queues.

Memory is fixed: the ring keeps the last `capacity` flows (older ones are overwritten, as in
Hubble's ring buffer) and each follower queue holds at most `queue_size` flows. A follower that
does not keep up loses flows; they are counted (per follower and in total), never buffered.
Everything runs on the agent's event loop thread, so no locks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice

from pylium.hubble.flow import Flow

DEFAULT_CAPACITY = 4095
"""Hubble's default ring size."""
DEFAULT_QUEUE_SIZE = 1024


class Follower:
    """New flows for one reader. `get()` waits for the next; `lost` counts what overflowed.

    Iterate with `async for`; iteration ends when the ring closes the follower.
    """

    def __init__(self, ring: FlowRing, queue_size: int) -> None:
        self._ring = ring
        self._queue: asyncio.Queue[Flow | None] = asyncio.Queue(queue_size)
        self.lost = 0
        """Flows this follower did not receive because its queue was full."""
        self.closed = False

    def offer(self, flow: Flow) -> bool:
        """Queue a flow without waiting; False (and counted) when the queue is full."""
        if self.closed:
            return True
        try:
            self._queue.put_nowait(flow)
        except asyncio.QueueFull:
            self.lost += 1
            return False
        return True

    async def get(self) -> Flow | None:
        """The next flow, or None once the follower is closed and drained."""
        if self.closed and self._queue.empty():
            return None
        return await self._queue.get()

    def close(self) -> None:
        """Stop receiving; a waiting `get()` returns None."""
        if self.closed:
            return
        self.closed = True
        self._ring.unsubscribe(self)
        if self._queue.full():
            self._queue.get_nowait()  # make room for the end mark; counted as lost
            self.lost += 1
        self._queue.put_nowait(None)

    def __aiter__(self) -> Follower:
        return self

    async def __anext__(self) -> Flow:
        flow = await self.get()
        if flow is None:
            raise StopAsyncIteration
        return flow


class FlowRing:
    """The last `capacity` flows in arrival order, O(1) append."""

    def __init__(
        self, capacity: int = DEFAULT_CAPACITY, queue_size: int = DEFAULT_QUEUE_SIZE
    ) -> None:
        if capacity < 1 or queue_size < 1:
            raise ValueError("capacity and queue_size must be positive")
        self.capacity = capacity
        self._queue_size = queue_size
        self._flows: deque[Flow] = deque(maxlen=capacity)
        self._followers: set[Follower] = set()
        self.seen = 0
        """Flows ever appended."""
        self.follower_lost = 0
        """Flows not delivered to slow followers, summed over all followers."""
        self._listeners: list[Callable[[Flow], None]] = []

    def __len__(self) -> int:
        return len(self._flows)

    @property
    def follower_count(self) -> int:
        """Followers currently subscribed."""
        return len(self._followers)

    def add_listener(self, listener: Callable[[Flow], None]) -> None:
        """Call `listener` with every flow appended from now on, synchronously (it must be
        quick and must not raise: flow metrics count here, so they miss nothing)."""
        self._listeners.append(listener)

    def append(self, flow: Flow) -> None:
        """Keep `flow` (dropping the oldest when full), hand it to the listeners and offer it to
        every follower."""
        self._flows.append(flow)
        self.seen += 1
        for listener in self._listeners:
            listener(flow)
        for follower in self._followers:
            if not follower.offer(flow):
                self.follower_lost += 1

    def last(self, n: int) -> list[Flow]:
        """The newest `n` flows, oldest first."""
        if n <= 0:
            return []
        newest = list(islice(reversed(self._flows), n))
        newest.reverse()
        return newest

    def since(self, time_ns: int) -> list[Flow]:
        """Flows with `time_ns` at or after the given time, oldest first (flows arrive in
        time order: they are stamped when read)."""
        newer: list[Flow] = []
        for flow in reversed(self._flows):
            if flow.time_ns < time_ns:
                break
            newer.append(flow)
        newer.reverse()
        return newer

    def __iter__(self) -> Iterator[Flow]:
        return iter(list(self._flows))

    def follow(self, queue_size: int | None = None) -> Follower:
        """A new follower receiving every flow appended from now on; close it when done."""
        follower = Follower(self, queue_size or self._queue_size)
        self._followers.add(follower)
        return follower

    def unsubscribe(self, follower: Follower) -> None:
        self._followers.discard(follower)

    def close(self) -> None:
        """End every follower (their iteration stops after what they already hold)."""
        for follower in list(self._followers):
            follower.close()
