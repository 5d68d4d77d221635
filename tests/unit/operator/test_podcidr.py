"""Pod CIDR allocator over the cluster pool list: order, sizes, exhaustion, never twice,
rebuild from recorded assignments."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from pylium.operator.podcidr import (
    CIDRTaken,
    PodCIDRAllocator,
    PoolExhausted,
    parse_pools,
)


def make(cidrs: list[str], mask: int) -> PodCIDRAllocator:
    return PodCIDRAllocator(parse_pools(cidrs, mask), mask)


def test_lowest_free_subnet_in_pool_order():
    """Subnets come out lowest first, the first pool before the second."""
    alloc = make(["10.244.0.0/23", "10.9.0.0/24"], 24)
    got = [str(alloc.allocate(f"n{i}")) for i in range(3)]
    assert got == ["10.244.0.0/24", "10.244.1.0/24", "10.9.0.0/24"]
    with pytest.raises(PoolExhausted, match="no free /24 left"):
        alloc.allocate("n3")
    assert alloc.assignments() == {
        "10.244.0.0/24": "n0",
        "10.244.1.0/24": "n1",
        "10.9.0.0/24": "n2",
    }


@pytest.mark.parametrize(("mask", "count"), [(26, 4), (25, 2), (24, 1)])
def test_mask_size_sets_subnet_size_and_count(mask, count):
    """A /24 pool yields 256 / 2**(32-mask) subnets of the requested size."""
    alloc = make(["10.1.2.0/24"], mask)
    nets = [alloc.allocate(f"n{i}") for i in range(count)]
    assert all(n.prefixlen == mask for n in nets)
    assert sum(n.num_addresses for n in nets) == 256
    with pytest.raises(PoolExhausted):
        alloc.allocate("extra")


def test_deterministic():
    """Two allocators fed the same requests hand out the same subnets."""
    a, b = make(["10.244.0.0/16"], 24), make(["10.244.0.0/16"], 24)
    for node in ("x", "y", "z"):
        assert a.allocate(node) == b.allocate(node)


def test_never_twice_and_idempotent_per_node():
    """A node asking again gets its own subnet back; no subnet goes to two nodes."""
    alloc = make(["10.244.0.0/20"], 24)
    first = {f"n{i}": alloc.allocate(f"n{i}") for i in range(16)}
    assert len(set(first.values())) == 16
    assert all(alloc.allocate(n) == c for n, c in first.items())
    with pytest.raises(PoolExhausted):
        alloc.allocate("n16")


def test_release_makes_the_subnet_available_again():
    """A released subnet is the lowest free one and is handed to the next node."""
    alloc = make(["10.244.0.0/22"], 24)
    for i in range(4):
        alloc.allocate(f"n{i}")
    assert alloc.release("n1") == [IPv4Network("10.244.1.0/24")]
    assert alloc.release("n1") == []
    assert alloc.owner("10.244.1.0/24") is None
    assert str(alloc.allocate("new")) == "10.244.1.0/24"


def test_rebuild_restores_used_set():
    """An allocator rebuilt from the recorded assignments skips every recorded subnet."""
    before = make(["10.244.0.0/16"], 24)
    for node in ("a", "b", "c"):
        before.allocate(node)
    before.release("b")
    after = PodCIDRAllocator.rebuild(before.pools, 24, before.assignments())
    assert after.assignments() == before.assignments()
    assert after.assigned("c") == [IPv4Network("10.244.2.0/24")]
    assert str(after.allocate("d")) == "10.244.1.0/24"
    assert str(after.allocate("e")) == "10.244.3.0/24"


def test_subnets_of_another_size_or_pool_still_block():
    """After a restart with a smaller mask or other pools, old subnets are kept and never
    overlapped by new ones."""
    alloc = PodCIDRAllocator.rebuild(
        parse_pools(["10.244.0.0/22"], 25),
        25,
        {"10.244.0.0/24": "old", "10.99.0.0/24": "elsewhere"},
    )
    got = [str(alloc.allocate(f"n{i}")) for i in range(4)]
    assert got == ["10.244.1.0/25", "10.244.1.128/25", "10.244.2.0/25", "10.244.2.128/25"]
    assert alloc.assigned("elsewhere") == [IPv4Network("10.99.0.0/24")]


def test_occupy_and_set_node_refuse_another_nodes_subnet():
    """Adopting a subnet that overlaps another node's raises CIDRTaken and changes nothing."""
    alloc = make(["10.244.0.0/16"], 24)
    alloc.allocate("a")
    with pytest.raises(CIDRTaken, match="node a"):
        alloc.occupy("b", "10.244.0.0/24")
    with pytest.raises(CIDRTaken):
        alloc.set_node("b", ["10.244.0.128/25"])
    assert alloc.assignments() == {"10.244.0.0/24": "a"}


def test_set_node_replaces_the_nodes_subnets():
    """set_node makes the given subnets exactly the node's: the old one is freed."""
    alloc = make(["10.244.0.0/16"], 24)
    alloc.allocate("a")
    alloc.set_node("a", ["10.244.7.0/24"])
    assert alloc.assignments() == {"10.244.7.0/24": "a"}
    assert str(alloc.allocate("b")) == "10.244.0.0/24"


@pytest.mark.parametrize(
    ("cidrs", "mask", "message"),
    [
        ([], 24, "empty"),
        (["10.244.0.0/16"], 15, "larger than the pool"),
        (["10.244.0.0/16"], 31, "outside"),
        (["10.244.0.0/16", "10.244.3.0/24"], 24, "overlap"),
        (["10.244.0.1/16"], 24, "host bits"),
    ],
)
def test_bad_pool_settings(cidrs, mask, message):
    """Pool settings the allocator cannot work with are refused up front."""
    with pytest.raises(ValueError, match=message):
        parse_pools(cidrs, mask)
