"""The public surfaces of the agent's packages stay curated: `__all__` lists what exists."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("package", ["pylium.ipam", "pylium.endpoint"])
def test_all_lists_exactly_the_public_names(package):
    module = importlib.import_module(package)
    public = {n for n in vars(module) if not n.startswith("_") and n != "annotations"}
    public -= {n for n in public if type(getattr(module, n)).__name__ == "module"}
    assert sorted(module.__all__) == sorted(public)
