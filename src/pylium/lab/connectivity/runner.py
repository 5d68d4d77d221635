"""Running the connectivity test: select scenarios, deploy, probe, collect results.

Probes run PROBES_AT_ONCE at a time (each is a short process of its own; a one-answer scenario's
one after another); results are reported in scenario order. Policy scenarios come last and run
one at a time, after the others: each waits until its policy is enforced, probes, removes it and
waits until its removal is enforced (`run_policy_scenario`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pylium.lab.connectivity.deploy import PROBES_AT_ONCE, Deployment, deploy, probe_from
from pylium.lab.connectivity.policy import POLICY_SCENARIOS, POLICY_TIMEOUT, Policies, StorePolicies
from pylium.lab.connectivity.scenarios import SCENARIOS, Action, Scenario, Unanswered
from pylium.lab.record import LabRecord


@dataclass(frozen=True)
class ActionResult:
    """One probe's outcome: ok when it answered (or failed) as expected; `reason` says why it
    failed (the probe's reason when it was expected to: `refused`, `timeout`)."""

    source: str
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

    def to_json(self) -> dict[str, Any]:
        """The stable `-o json` form."""
        return asdict(self)


ALL_SCENARIOS = [*SCENARIOS, *POLICY_SCENARIOS]
RETRY_INTERVAL = 0.05
"""Seconds between a policy scenario's probes while it waits for enforcement."""


def select(pattern: str | None) -> list[Scenario]:
    """The scenarios whose name matches the regex (all without one); a leading `!` selects
    those that do not match it (as Cilium's `--test`)."""
    if not pattern:
        return list(ALL_SCENARIOS)
    exclude = pattern.startswith("!")
    regex = re.compile(pattern.removeprefix("!"))
    return [s for s in ALL_SCENARIOS if bool(regex.search(s.name)) != exclude]


Prober = Callable[[Deployment, Action], dict[str, Any]]
"""Runs one action's probe from its source: (deployment, action) -> the probe's JSON result."""


def probe_action(deployment: Deployment, action: Action) -> dict[str, Any]:
    """The real prober: a probe process in the client pod or the world namespace."""
    return probe_from(
        deployment,
        action.source,
        action.dest,
        action.port,
        action.protocol,
        action.show_peer,
        action.timeout,
    )


def _verdict(action: Action, raw: dict[str, Any]) -> tuple[bool, str | None]:
    """(ok, why not or how it failed as expected) for a probe's JSON result."""
    answer, reason, expect = raw.get("answer"), raw.get("reason"), action.expect
    if isinstance(expect, Unanswered):
        if reason == expect.reason:
            return True, reason
        return (
            False,
            f"{f'answered {answer!r}' if raw.get('ok') else reason}, expected {expect.reason}",
        )
    if not raw.get("ok"):
        return False, str(reason)
    if answer == expect or (isinstance(expect, frozenset) and answer in expect):
        return True, None
    want = " or ".join(map(repr, sorted(expect))) if isinstance(expect, frozenset) else repr(expect)
    return False, f"answered {answer!r}, expected {want}"


def _outcome(action: Action, ok: bool, reason: str | None, answer: Any = None) -> ActionResult:
    """`action`'s result with its verdict (an answer that is not a string counts as none)."""
    return ActionResult(
        source=action.source,
        target=action.target,
        destination=action.dest,
        port=action.port,
        protocol=action.protocol,
        ok=ok,
        answer=answer if isinstance(answer, str) else None,
        reason=reason,
    )


def _run_action(deployment: Deployment, action: Action, probe: Prober) -> ActionResult:
    raw = probe(deployment, action)
    return _outcome(action, *_verdict(action, raw), raw.get("answer"))


def _one_answer(actions: list[ActionResult]) -> list[ActionResult]:
    """Fail the probes answered by another backend than the first answered one."""
    first = next((a.answer for a in actions if a.ok), None)
    return [
        replace(a, ok=False, reason=f"answered {a.answer!r} after {first!r}: no affinity")
        if a.ok and a.answer != first
        else a
        for a in actions
    ]


def run_scenarios(
    deployment: Deployment,
    scenarios: list[Scenario],
    probe: Prober,
    on_result: Callable[[ScenarioResult], None],
    policies: Policies,
) -> list[ScenarioResult]:
    """Run each scenario's probes against a deployment, reporting each result in scenario
    order (policy scenarios after the others). A scenario with no action here is skipped."""

    def probe_all(actions: list[Action]) -> list[ActionResult]:
        return [_run_action(deployment, a, probe) for a in actions]

    results = []
    with ThreadPoolExecutor(PROBES_AT_ONCE) as pool:
        planned = []
        for scenario in scenarios:
            if scenario.policy is not None:
                continue
            actions = scenario.actions(deployment)
            # A one-answer scenario's probes go one after another: the first sets the affinity.
            groups = [actions] if scenario.one_answer else [[a] for a in actions]
            planned.append((scenario, [pool.submit(probe_all, g) for g in groups if g]))
        for scenario, futures in planned:
            result = _result(scenario, [r for f in futures for r in f.result()])
            on_result(result)
            results.append(result)
        for scenario in scenarios:
            if scenario.policy is not None:
                result = run_policy_scenario(deployment, scenario, probe, policies, pool)
                on_result(result)
                results.append(result)
    return results


def run_policy_scenario(
    deployment: Deployment,
    scenario: Scenario,
    probe: Prober,
    policies: Policies,
    pool: Executor,
) -> ScenarioResult:
    """Apply the scenario's policies; probe until each probe that must fail does (the policy
    is enforced), then until each other probe answers as expected; remove the policies (also
    on failure) and probe until the failing ones answer again (the removal is enforced, so the
    next scenario starts from no policy). Each wait ends after POLICY_TIMEOUT."""
    assert scenario.policy is not None
    actions = scenario.actions(deployment)
    if not actions:
        return _result(scenario, [])
    objs = scenario.policy(deployment)
    denied = [i for i, a in enumerate(actions) if isinstance(a.expect, Unanswered)]
    allowed = [i for i in range(len(actions)) if i not in denied]
    results: dict[int, ActionResult] = {}
    policies.apply(objs)
    try:
        deadline = time.monotonic() + POLICY_TIMEOUT

        def until_expected(i: int) -> ActionResult:
            while True:
                result = _run_action(deployment, actions[i], probe)
                if result.ok or time.monotonic() > deadline:
                    return result
                time.sleep(RETRY_INTERVAL)

        for group in (denied, allowed):
            results |= zip(group, pool.map(until_expected, group), strict=True)
    finally:
        policies.remove(objs)
    reopen_deadline = time.monotonic() + POLICY_TIMEOUT

    def reopened(i: int) -> ActionResult | None:
        """None once the probe is answered again; why not at the deadline."""
        action = actions[i]
        while True:
            raw = probe(deployment, action)
            if raw.get("ok"):
                return None
            if time.monotonic() > reopen_deadline:
                closed = _outcome(action, False, f"{raw.get('reason')} {POLICY_TIMEOUT:.0f}s after")
                return replace(closed, target=f"{action.target} after the policy's removal")
            time.sleep(RETRY_INTERVAL)

    still_closed = [r for r in pool.map(reopened, denied) if r is not None]
    return _result(scenario, [results[i] for i in range(len(actions))] + still_closed)


def _result(scenario: Scenario, actions: list[ActionResult]) -> ScenarioResult:
    """The scenario's verdict from its probes' (none: skipped)."""
    result = ScenarioResult(scenario.name, scenario.description, "skipped")
    if actions:
        result.actions = _one_answer(actions) if scenario.one_answer else actions
        ok = all(a.ok for a in result.actions)
        result.status = "passed" if ok else "failed"
    return result


def run(
    lab: LabRecord,
    scenarios: list[Scenario],
    on_result: Callable[[ScenarioResult], None] = lambda _r: None,
) -> list[ScenarioResult]:
    """Deploy into the lab, run the scenarios' probes, stop the listeners."""
    deployment = deploy(lab)
    try:
        return run_scenarios(deployment, scenarios, probe_action, on_result, StorePolicies(lab))
    finally:
        deployment.stop()
