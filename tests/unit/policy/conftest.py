"""Prints the NetworkPolicy conformance pass/fail table after the session."""

from __future__ import annotations

import pytest

RESULTS: dict[str, tuple[str, int]] = {}
"""case id -> (name, mismatches), filled by test_netpol_cases."""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per case run: PASS/FAIL, mismatches, name."""
    if not RESULTS:
        return
    terminalreporter.section("NetworkPolicy cases (model level)")
    for case_id, (name, wrong) in sorted(RESULTS.items()):
        status = "PASS" if not wrong else f"FAIL ({wrong} mismatches)"
        terminalreporter.write_line(f"{case_id:<10} {status:<22} {name}")
    passed = sum(1 for _, wrong in RESULTS.values() if not wrong)
    terminalreporter.write_line(f"{passed}/{len(RESULTS)} cases pass")
