"""SqliteStore specifics: the change log's compaction (the shared suite is in test_store.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pylium.store import Expired
from pylium.store.sqlite import SqliteStore
from tests.unit.store.test_store import collect, pod


async def test_watch_from_compacted_revision_raises_expired(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", keep_changes=5, poll_interval=0.01)
    try:
        for i in range(10):
            await store.create(pod(f"p{i}"))
        with pytest.raises(Expired):
            await collect(store, "Pod", 2, 1)
        events = await collect(store, "Pod", 5, 5)
        assert [e.revision for e in events] == [6, 7, 8, 9, 10]
    finally:
        await store.close()
