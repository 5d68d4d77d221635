"""Identity test fixtures: the store tests' throwaway etcd, for allocation through etcd."""

from __future__ import annotations

from tests.unit.store.conftest import etcd_server

__all__ = ["etcd_server"]
