"""Cluster-pool allocator: reserved addresses, persistence, reload, exhaustion, GC."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from pylium.ipam import ClusterPoolAllocator, NotInPool, PoolExhausted


def make(tmp_path: Path, cidr: str = "10.244.1.0/29", now: list[float] | None = None):
    clock = now or [1000.0]
    alloc = ClusterPoolAllocator(cidr, tmp_path / "ipam.json", clock=lambda: clock[0])
    alloc.load()
    return alloc


def test_never_hands_out_network_broadcast_or_router(tmp_path):
    """A /29 has 8 addresses; network, broadcast and the router (.1) are never handed out."""
    ipam = make(tmp_path)
    got = [str(ipam.allocate(f"o{i}").ip) for i in range(5)]
    assert got == [f"10.244.1.{i}" for i in range(2, 7)]
    assert ipam.router_ip == IPv4Address("10.244.1.1")
    with pytest.raises(PoolExhausted):
        ipam.allocate("one-too-many")
    assert (ipam.used_count, ipam.available) == (5, 0)


def test_release_then_reuse_after_the_rest_of_the_range(tmp_path):
    """Next-fit: a released address comes back only after the others were tried."""
    ipam = make(tmp_path)
    a = ipam.allocate("a").ip
    ipam.allocate("b")
    assert ipam.release(a) is not None
    assert ipam.release(a) is None  # free already: no error
    assert str(ipam.allocate("c").ip) == "10.244.1.4"
    for owner in ("d", "e"):
        ipam.allocate(owner)
    assert ipam.allocate("f").ip == a  # wrapped around to the only free one


def test_release_owner_frees_everything_it_holds(tmp_path):
    ipam = make(tmp_path, "10.244.1.0/24")
    ipam.allocate("x")
    ipam.allocate("y")
    ipam.allocate("x")
    gone = ipam.release_owner("x")
    assert sorted(str(a.ip) for a in gone) == ["10.244.1.2", "10.244.1.4"]
    assert ipam.used() == {"10.244.1.3": "y"}


def test_release_outside_the_pool_is_refused(tmp_path):
    ipam = make(tmp_path)
    with pytest.raises(NotInPool):
        ipam.release("10.9.9.9")


def test_every_change_is_on_disk_and_a_reload_continues_without_double_allocation(tmp_path):
    """A new allocator over the same file (an agent restart) sees every allocation and the
    cursor, so it hands out none of them again."""
    ipam = make(tmp_path, "10.244.1.0/24")
    held = {str(ipam.allocate(f"pod{i}").ip) for i in range(10)}
    ipam.release("10.244.1.5")
    held.discard("10.244.1.5")
    on_disk = json.loads((tmp_path / "ipam.json").read_text())
    assert set(on_disk["allocations"]) == held

    again = make(tmp_path, "10.244.1.0/24")
    assert set(again.used()) == held
    fresh = {str(again.allocate(f"new{i}").ip) for i in range(20)}
    assert not fresh & held
    assert "10.244.1.5" not in fresh  # next-fit: the released one is not reused soon


def test_reload_drops_allocations_outside_a_changed_cidr(tmp_path):
    ipam = make(tmp_path, "10.244.1.0/24")
    ipam.allocate("a")
    other = make(tmp_path, "10.244.2.0/24")
    assert other.used() == {}
    assert json.loads((tmp_path / "ipam.json").read_text())["allocations"] == {}


def test_no_temporary_file_is_left(tmp_path):
    ipam = make(tmp_path)
    ipam.allocate("a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ipam.json"]


def test_gc_releases_only_old_allocations_without_a_live_owner(tmp_path):
    now = [1000.0]
    ipam = make(tmp_path, "10.244.1.0/24", now)
    ipam.allocate("live")
    ipam.allocate("dead-old")
    now[0] = 1100.0
    ipam.allocate("dead-young")
    gone = ipam.gc({"live"}, grace=50)
    assert [a.owner for a in gone] == ["dead-old"]
    assert sorted(ipam.used().values()) == ["dead-young", "live"]
    now[0] = 1200.0
    assert [a.owner for a in ipam.gc({"live"}, grace=50)] == ["dead-young"]
    assert make(tmp_path, "10.244.1.0/24", now).used() == {"10.244.1.2": "live"}


def test_tiny_cidrs_are_refused(tmp_path):
    with pytest.raises(ValueError):
        ClusterPoolAllocator("10.0.0.0/31", tmp_path / "x.json")
