"""A change tracker like kube-proxy's (`pkg/proxy/servicechangetracker.go`): between two syncs
it keeps, per key, the first old value and the latest new one, and drops round trips (an add
then a delete, or an update back to the synced value), so a sync touches only what changed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class Change(Generic[V]):
    """What a key held at the last sync (`old`) and holds now (`new`); None: absent."""

    old: V | None
    new: V | None


class ChangeTracker(Generic[K, V]):
    """Pending changes since the last `take()`."""

    def __init__(self) -> None:
        self._pending: dict[K, Change[V]] = {}

    def record(self, key: K, old: V | None, new: V | None) -> None:
        """Note that `key` went from `old` to `new`."""
        first = self._pending[key].old if key in self._pending else old
        if first == new:
            self._pending.pop(key, None)  # a round trip: nothing to sync
        else:
            self._pending[key] = Change(old=first, new=new)

    def take(self) -> dict[K, Change[V]]:
        """Every pending change; the tracker starts afresh."""
        pending, self._pending = self._pending, {}
        return pending

    def __len__(self) -> int:
        return len(self._pending)
