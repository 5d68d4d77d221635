"""A work queue of object keys, as client-go's: a key waits at most once, is handled by one
worker at a time, and a key added while it is being handled is handled again afterwards."""

from __future__ import annotations

import asyncio


class WorkQueue:
    """Keys to sync. Use from one event loop."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._dirty: set[str] = set()
        self._failures: dict[str, int] = {}

    def add(self, key: str) -> None:
        """Ask for `key` to be synced."""
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def retry(self, key: str, base: float = 0.5, cap: float = 30.0) -> float:
        """Add `key` again after an exponential backoff; returns the delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay: float = min(cap, base * 2.0**failures)
        asyncio.get_running_loop().call_later(delay, self.add, key)
        return delay

    def forget(self, key: str) -> None:
        """Reset the backoff of `key` after a successful sync."""
        self._failures.pop(key, None)

    async def get(self) -> str:
        """The next key; the caller must call `done(key)` when finished with it."""
        key = await self._queue.get()
        self._queued.discard(key)
        self._active.add(key)
        return key

    def done(self, key: str) -> None:
        """Finish handling `key`; requeue it if it was added meanwhile."""
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)
