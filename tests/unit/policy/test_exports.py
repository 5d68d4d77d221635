"""The policy package's public surface is sorted and every name resolves."""

from __future__ import annotations

import pylium.policy


def test_all_is_sorted_and_importable() -> None:
    """`__all__` lists real attributes in sorted order (constants first, as ruff sorts)."""
    names = pylium.policy.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    assert all(hasattr(pylium.policy, name) for name in names)
