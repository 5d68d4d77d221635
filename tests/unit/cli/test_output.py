"""Output helpers: kubectl-style ages and tables."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pylium.cli.output import age, human_duration, render_table


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "5s"),
        (119, "119s"),
        (200, "3m20s"),
        (240, "4m"),
        (900, "15m"),
        (5 * 3600 + 120, "5h2m"),
        (20 * 3600, "20h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (40 * 86400, "40d"),
        (3 * 365 * 86400, "3y"),
    ],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_age_of_timestamp() -> None:
    now = datetime(2026, 11, 26, 15, 0, 30, tzinfo=UTC)
    assert age("2026-11-26T15:00:00Z", now) == "30s"
    assert age(None, now) == "<unknown>"


def test_render_table_aligns_columns() -> None:
    assert render_table(["NAME", "IP"], [["web-long", "10.0.0.1"], ["a", "<none>"]]) == (
        "NAME       IP\nweb-long   10.0.0.1\na          <none>"
    )
