"""Maglev consistent hashing as Cilium computes it (`pkg/maglev`, after the Maglev paper).

Each backend gets a permutation of the table's M slots from two hashes of its name (the two
64-bit halves of MurmurHash3 x64_128 with the cluster's seed): `offset = h1 % M`,
`skip = h2 % (M - 1) + 1`, slot j of its permutation = `(offset + j * skip) % M`. Backends take
turns claiming their next free preferred slot until all M are filled. M is prime so every
permutation visits every slot.

The table depends only on the backend names, M and the seed, never on arrival order or on
node-local backend IDs: every node computes the same table for the same backends, and removing
one backend moves little more than that backend's own slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

DEFAULT_TABLE_SIZE = 16381
"""Cilium's default `maglev.tableSize` (prime; ~160 backends at <= 1% disruption)."""
TABLE_SIZES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
"""The prime table sizes Cilium accepts."""
DEFAULT_SEED = 0
"""Hash seed (Cilium derives it from `maglev.hashSeed`; all nodes of a cluster share it)."""

_MASK = (1 << 64) - 1
_C1 = 0x87C37B91114253D5
_C2 = 0x4CF5AD432745937F


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _MASK


def _fmix(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _MASK
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _MASK
    k ^= k >> 33
    return k


def murmur3_128(data: bytes, seed: int = 0) -> tuple[int, int]:
    """MurmurHash3 x64_128 of `data`: the two 64-bit halves (h1, h2)."""
    h1 = h2 = seed & 0xFFFFFFFF
    nblocks = len(data) // 16
    for i in range(nblocks):
        k1 = int.from_bytes(data[16 * i : 16 * i + 8], "little")
        k2 = int.from_bytes(data[16 * i + 8 : 16 * i + 16], "little")
        k1 = (_rotl((k1 * _C1) & _MASK, 31) * _C2) & _MASK
        h1 ^= k1
        h1 = (_rotl(h1, 27) + h2) & _MASK
        h1 = (h1 * 5 + 0x52DCE729) & _MASK
        k2 = (_rotl((k2 * _C2) & _MASK, 33) * _C1) & _MASK
        h2 ^= k2
        h2 = (_rotl(h2, 31) + h1) & _MASK
        h2 = (h2 * 5 + 0x38495AB5) & _MASK
    tail = data[16 * nblocks :]
    k1 = int.from_bytes(tail[:8], "little")
    k2 = int.from_bytes(tail[8:16], "little")
    if len(tail) > 8:
        h2 ^= (_rotl((k2 * _C2) & _MASK, 33) * _C1) & _MASK
    if tail:
        h1 ^= (_rotl((k1 * _C1) & _MASK, 31) * _C2) & _MASK
    h1 ^= len(data)
    h2 ^= len(data)
    h1 = (h1 + h2) & _MASK
    h2 = (h2 + h1) & _MASK
    h1, h2 = _fmix(h1), _fmix(h2)
    h1 = (h1 + h2) & _MASK
    h2 = (h2 + h1) & _MASK
    return h1, h2


def offset_and_skip(name: str, m: int, seed: int = DEFAULT_SEED) -> tuple[int, int]:
    """A backend's permutation parameters for a table of size m."""
    h1, h2 = murmur3_128(name.encode(), seed)
    return h1 % m, h2 % (m - 1) + 1


def lookup_table(backends: Sequence[str], m: int = DEFAULT_TABLE_SIZE, seed: int = 0) -> list[int]:
    """The Maglev table: slot -> index into `sorted(backends)`; empty when no backends.

    Args:
        backends: backend names (Cilium hashes the backend's address string); order does not
            matter, they are sorted first.
        m: table size, one of TABLE_SIZES.
        seed: the cluster's hash seed.
    """
    if m not in TABLE_SIZES:
        raise ValueError(f"maglev table size {m} is not one of {TABLE_SIZES}")
    return list(_table(tuple(sorted(set(backends))), m, seed))


@lru_cache(maxsize=256)
def _table(names: tuple[str, ...], m: int, seed: int) -> tuple[int, ...]:
    """The table of sorted, distinct names; cached because every frontend of a service port
    (ClusterIP, NodePort per address, LB IPs) has the same backends."""
    if not names:
        return ()
    params = [offset_and_skip(name, m, seed) for name in names]
    nxt = [0] * len(names)
    table = [-1] * m
    filled = 0
    while True:
        for i, (offset, skip) in enumerate(params):
            c = (offset + nxt[i] * skip) % m
            while table[c] >= 0:
                nxt[i] += 1
                c = (offset + nxt[i] * skip) % m
            table[c] = i
            nxt[i] += 1
            filled += 1
            if filled == m:
                return tuple(table)
