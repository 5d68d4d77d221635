"""`lab status` shows each node's flow losses by source, so they are never silent."""

from __future__ import annotations

from pylium.cli.lab import _flows_line


def test_flow_losses_are_shown_by_source() -> None:
    assert _flows_line(None) == "(observer not answering)"
    quiet = {"seen_flows": "12", "lost_events": {"PERF_EVENT_RING_BUFFER": "0"}}
    assert _flows_line(quiet) == "seen 12, lost 0"
    lossy = {"seen_flows": "9", "lost_events": {"PERF_EVENT_RING_BUFFER": "3", "OBSERVER": "1"}}
    assert _flows_line(lossy) == "seen 9, [red]lost 1 (OBSERVER), 3 (PERF_EVENT_RING_BUFFER)[/red]"
