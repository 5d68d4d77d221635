"""Store test fixtures: `store` / `store_url` run each test on every backend (sqlite, and etcd
on loopback), and `etcd_server` is a throwaway etcd for one test."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pylium.store import Store, open_store
from tests.unit.store.etcd_server import ETCD, EtcdServer


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdServer]:
    """A running etcd with its own ports and data dir; stopped and removed afterwards."""
    if ETCD is None:
        pytest.skip("needs the etcd binary (Debian's etcd-server; scripts/setup.sh installs it)")
    server = EtcdServer(tmp_path / "etcd")
    server.base.mkdir()
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "etcd"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store, once per backend."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/store.db"
    server: EtcdServer = request.getfixturevalue("etcd_server")
    return server.url("/test")


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """An empty store, once per backend."""
    s = open_store(store_url)
    try:
        yield s
    finally:
        await s.close()
