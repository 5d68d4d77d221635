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


Prober = Callable[[Deployment, str, int, str], dict[str, Any]]
"""Probes from the client pod: (deployment, dest, port, protocol) -> the probe's JSON result."""


def _run_action(deployment: Deployment, action: Action, probe: Prober) -> ActionResult:
    raw = probe(deployment, action.dest, action.port, action.protocol)
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


def run_scenarios(
    deployment: Deployment,
    scenarios: list[Scenario],
    probe: Prober,
    on_result: Callable[[ScenarioResult], None],
) -> list[ScenarioResult]:
    """Run each scenario's probes against a deployment, reporting each result as it completes.
    A scenario with no action here is skipped; `requires` is reported only on failure."""
    results = []
    for scenario in scenarios:
        actions = scenario.actions(deployment)
        result = ScenarioResult(scenario.name, scenario.description, "skipped")
        if actions:
            result.actions = [_run_action(deployment, a, probe) for a in actions]
            ok = all(a.ok for a in result.actions)
            result.status = "passed" if ok else "failed"
            result.requires = None if ok else scenario.requires
        on_result(result)
        results.append(result)
    return results


def run(
    lab: LabRecord,
    scenarios: list[Scenario],
    on_result: Callable[[ScenarioResult], None] = lambda _r: None,
) -> list[ScenarioResult]:
    """Deploy into the lab, run the scenarios from inside the client pod, stop the listeners."""
    deployment = deploy(lab)
    try:
        return run_scenarios(deployment, scenarios, probe_in_pod, on_result)
    finally:
        deployment.stop()
