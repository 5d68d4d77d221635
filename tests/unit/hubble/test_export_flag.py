"""`pylium-agent --enable-hubble`: flow export on by default; false turns trace events off."""

from __future__ import annotations

from pylium.agent.main import parse_args

BASE = ["--node", "n1", "--store", "sqlite:////tmp/unused.db"]


def test_that_flow_export_is_on_unless_turned_off():
    assert parse_args(BASE).hubble is True
    assert parse_args([*BASE, "--enable-hubble", "false"]).hubble is False
