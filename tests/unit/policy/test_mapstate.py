"""Policy-map keys: port ranges as prefix blocks, coverage, LPM lookup and byte encoding."""

from __future__ import annotations

import pytest

from pylium.policy import PolicyEntry, PolicyKey, encode_entry, encode_key, port_range_prefixes
from pylium.policy.compute import EndpointPolicy
from pylium.policy.rules import Direction

IN, OUT = Direction.INGRESS, Direction.EGRESS


def expand(blocks: list[tuple[int, int]]) -> list[int]:
    """Every port the blocks cover, in order."""
    out: list[int] = []
    for port, prefix in blocks:
        out += range(port, port + (1 << (16 - prefix)))
    return out


@pytest.mark.parametrize(
    ("first", "last", "blocks"),
    [
        (80, 80, [(80, 16)]),
        (80, 81, [(80, 15)]),
        (80, 83, [(80, 14)]),
        (79, 82, [(79, 16), (80, 15), (82, 16)]),
        (0, 65535, [(0, 0)]),
        (1024, 2047, [(1024, 6)]),
    ],
)
def test_port_range_blocks(first: int, last: int, blocks: list[tuple[int, int]]) -> None:
    """Ranges split into the largest aligned power-of-two blocks, as Cilium does."""
    assert port_range_prefixes(first, last) == blocks


@pytest.mark.parametrize(("first", "last"), [(1, 65535), (3, 1000), (8000, 8100), (65535, 65535)])
def test_port_range_blocks_cover_exactly(first: int, last: int) -> None:
    """The blocks cover the range exactly once, no port outside it."""
    assert expand(port_range_prefixes(first, last)) == list(range(first, last + 1))


def test_bad_port_range_is_refused() -> None:
    """A reversed range is a bug upstream of the split."""
    with pytest.raises(ValueError, match="bad port range"):
        port_range_prefixes(90, 80)


def test_key_prefix_lengths_and_coverage() -> None:
    """Wildcard protocol = 40 bits, exact port = 64; identity 0 covers any identity."""
    any_key = PolicyKey(IN, 0, 0)
    tcp_range = PolicyKey(IN, 300, 6, 80, 15)
    tcp_80 = PolicyKey(IN, 300, 6, 80, 16)
    assert (any_key.prefix_len, tcp_range.prefix_len, tcp_80.prefix_len) == (40, 63, 64)
    assert any_key.covers(tcp_80) and tcp_range.covers(tcp_80)
    assert not tcp_80.covers(tcp_range)
    assert not PolicyKey(OUT, 0, 0).covers(tcp_80)
    assert not PolicyKey(IN, 301, 0).covers(tcp_80)
    assert str(tcp_range) == "ingress 300 6/80-81"


def test_encoding_matches_struct_policy_key() -> None:
    """12-byte key: prefixlen, sec_label (host order), egress bit, protocol, dport (network)."""
    key = PolicyKey(OUT, 0x01020304, 17, 53, 16)
    assert encode_key(key) == bytes.fromhex("400000000403020101110035")
    wildcard = PolicyKey(IN, 0, 0)
    assert encode_key(wildcard) == bytes.fromhex("280000000000000000000000")
    value = encode_entry(PolicyKey(IN, 5, 6, 80, 15), PolicyEntry(True, frozenset()))
    assert len(value) == 24
    assert value[2] == 1 | (15 << 3)


def test_lookup_takes_longest_prefix_and_deny_wins_across_identities() -> None:
    """Per identity the longest prefix decides; a deny from the identity-0 lookup wins."""
    allow = PolicyEntry(False, frozenset(["allow-web"]))
    deny = PolicyEntry(True, frozenset(["deny-81"]))
    policy = EndpointPolicy.from_entries(
        7,
        frozenset([IN]),
        {
            PolicyKey(IN, 300, 0): allow,
            PolicyKey(IN, 0, 6, 81, 16): deny,
        },
    )
    assert policy.decide(IN, 300, "TCP", 80).rules == ("allow-web",)
    denied = policy.decide(IN, 300, "TCP", 81)
    assert (denied.verdict, denied.reason, denied.drop_reason) == ("denied", "deny", 181)
    assert policy.decide(IN, 301, "UDP", 80).reason == "default-deny"
    assert policy.decide(OUT, 301, "UDP", 80).reason == "not-enforced"
