"""The crd-mode allocator over an explicit address list: router, next-fit, pool changes,
restart."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from pylium.ipam import NotInPool, PoolExhausted, PoolListAllocator

POOL = ["10.9.0.7", "10.9.0.3", "10.9.1.20", "10.9.0.5"]


def make(tmp_path: Path, pool: list[str] = POOL) -> PoolListAllocator:
    alloc = PoolListAllocator(pool, tmp_path / "ipam.json", clock=lambda: 1000.0)
    alloc.load()
    return alloc


def test_router_is_the_lowest_address_and_never_handed_out(tmp_path):
    """The lowest listed address is the router; the others go out in address order."""
    ipam = make(tmp_path)
    assert ipam.router_ip == IPv4Address("10.9.0.3")
    assert ipam.cidr is None
    assert (ipam.capacity, ipam.available) == (3, 3)
    got = [str(ipam.allocate(f"o{i}").ip) for i in range(3)]
    assert got == ["10.9.0.5", "10.9.0.7", "10.9.1.20"]
    with pytest.raises(PoolExhausted, match="pool of 4 addresses"):
        ipam.allocate("extra")
    assert (ipam.used_count, ipam.available) == (3, 0)


def test_next_fit_reuses_a_released_address_last(tmp_path):
    """A released address comes back only after the rest of the list was tried."""
    ipam = make(tmp_path, [f"10.9.0.{i}" for i in range(1, 6)])
    first = ipam.allocate("a").ip
    ipam.allocate("b")
    ipam.release(first)
    assert [str(ipam.allocate(o).ip) for o in ("c", "d", "e")] == [
        "10.9.0.4",
        "10.9.0.5",
        "10.9.0.2",
    ]


def test_pool_growth_adds_capacity(tmp_path):
    """Addresses the controller adds are handed out; generation moves so usage is
    republished."""
    ipam = make(tmp_path, ["10.9.0.1", "10.9.0.2"])
    ipam.allocate("a")
    with pytest.raises(PoolExhausted):
        ipam.allocate("b")
    generation = ipam.generation
    ipam.set_pool(["10.9.0.1", "10.9.0.2", "10.9.0.3"])
    assert ipam.generation > generation
    assert str(ipam.allocate("b").ip) == "10.9.0.3"


def test_shrink_keeps_holders_and_never_reuses_removed_addresses(tmp_path):
    """An address dropped from the list stays with its holder; once released it is gone."""
    ipam = make(tmp_path, ["10.9.0.1", "10.9.0.2", "10.9.0.3"])
    ipam.allocate("a")  # .2
    ipam.set_pool(["10.9.0.1", "10.9.0.3"])
    assert ipam.used() == {"10.9.0.2": "a"}
    assert (ipam.capacity, ipam.available) == (1, 1)
    ipam.release("10.9.0.2")
    assert str(ipam.allocate("b").ip) == "10.9.0.3"
    with pytest.raises(PoolExhausted):
        ipam.allocate("c")
    with pytest.raises(NotInPool):
        ipam.release("10.9.0.2")


def test_restart_keeps_router_and_allocations(tmp_path):
    """A restarted agent sees the same router (even if a lower address was added meanwhile)
    and every allocation, so it hands out none twice."""
    ipam = make(tmp_path)
    held = {str(ipam.allocate(o).ip) for o in ("a", "b")}
    on_disk = json.loads((tmp_path / "ipam.json").read_text())
    assert on_disk["router"] == "10.9.0.3"
    again = make(tmp_path, ["10.9.0.1", *POOL])
    assert again.router_ip == IPv4Address("10.9.0.3")
    assert set(again.used()) == held
    fresh = {str(again.allocate(o).ip) for o in ("c", "d")}
    assert fresh == {"10.9.1.20", "10.9.0.1"}
    assert not fresh & held


def test_too_small_pool_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least two"):
        PoolListAllocator(["10.9.0.1"], tmp_path / "x.json")
