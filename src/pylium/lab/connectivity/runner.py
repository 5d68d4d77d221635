"""Running the connectivity test: select scenarios, deploy, probe, collect results."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pylium.lab.connectivity.deploy import Deployment, deploy, probe_in_pod
from pylium.lab.connectivity.scenarios import SCENARIOS, Action, Scenario
from pylium.lab.record import LabRecord


@dataclass(frozen=True)
class ActionResult:
    """One probe's outcome: ok when it answered with what was expected."""

    target: str
    destination: str
    port: int
    protocol: str
    ok: bool
    answer: str | None
    reason: str | None


@dataclass
class ScenarioResult:
    """A scenario's outcome: passed (every action ok), failed, or skipped."""

    name: str
    description: str
    status: str
    """"passed", "failed" or "skipped"."""
    actions: list[ActionResult] = field(default_factory=list)
    requires: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The stable `-o json` form."""
        return asdict(self)


def select(pattern: str | None) -> list[Scenario]:
    """The scenarios whose name matches the regex (all without one)."""
    if not pattern:
        return list(SCENARIOS)
    regex = re.compile(pattern)
    return [s for s in SCENARIOS if regex.search(s.name)]


def _run_action(deployment: Deployment, action: Action) -> ActionResult:
    raw = probe_in_pod(deployment, action.dest, action.port, action.protocol)
    answer = raw.get("answer")
    reason = raw.get("reason")
    ok = bool(raw.get("ok")) and answer == action.expect
    if raw.get("ok") and not ok:
        reason = f"answered {answer!r}, expected {action.expect!r}"
    return ActionResult(
        target=action.target,
        destination=action.dest,
        port=action.port,
        protocol=action.protocol,
        ok=ok,
        answer=answer if isinstance(answer, str) else None,
        reason=None if ok else str(reason),
    )


def run(
    lab: LabRecord,
    scenarios: list[Scenario],
    on_result: Callable[[ScenarioResult], None] = lambda _r: None,
) -> list[ScenarioResult]:
    """Deploy, run each scenario's probes, report each result as it completes."""
    deployment = deploy(lab)
    results = []
    try:
        for scenario in scenarios:
            actions = scenario.actions(deployment)
            result = ScenarioResult(scenario.name, scenario.description, "skipped")
            if actions:
                result.actions = [_run_action(deployment, a) for a in actions]
                ok = all(a.ok for a in result.actions)
                result.status = "passed" if ok else "failed"
                result.requires = None if ok else scenario.requires
            on_result(result)
            results.append(result)
    finally:
        deployment.stop()
    return results
