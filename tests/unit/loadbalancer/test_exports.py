"""The package's public surface is exactly its sorted `__all__`."""

from __future__ import annotations

import pylium.loadbalancer as lb


def test_all_is_sorted_and_importable() -> None:
    """Every name in __all__ exists, the list is sorted, and no public class is left out."""
    assert lb.__all__ == sorted(lb.__all__, key=lambda n: (not n.isupper(), n))
    for name in lb.__all__:
        assert hasattr(lb, name), name
    public = {n for n, v in vars(lb).items() if isinstance(v, type) and not n.startswith("_")}
    assert public <= set(lb.__all__)
