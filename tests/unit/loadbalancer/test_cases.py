"""Every txtar case under cases/ replays to its golden LB dump and iptables/nftables rules,
with its inputs in file order and in reverse, and leaves nothing behind after the deletes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.loadbalancer.scripts import replay

CASES = sorted((Path(__file__).parent / "cases").glob("*.txtar"))


def test_there_are_cases() -> None:
    """The case list is not empty (a glob typo must not pass silently)."""
    assert len(CASES) >= 11


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_case(case: Path, reverse: bool) -> None:
    """The case's expected dumps match at every check, in both input orders."""
    mismatches = replay(case, reverse)
    assert not mismatches, "\n".join(mismatches)
