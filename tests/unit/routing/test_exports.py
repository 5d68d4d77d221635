"""The routing package's public surface: `__all__` lists exactly what it exports."""

from __future__ import annotations

import pylium.routing as routing


def test_all_lists_exactly_the_public_names() -> None:
    public = {n for n in vars(routing) if not n.startswith("_")}
    public -= {n for n in public if type(getattr(routing, n)).__name__ == "module"}
    assert sorted(routing.__all__) == sorted(public)
