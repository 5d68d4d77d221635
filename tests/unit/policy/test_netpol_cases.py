"""Every NetworkPolicy truth-table case of the shared conformance set passes at the model level
(one test per case id; a pass/fail table prints at the end of the session)."""

from __future__ import annotations

from typing import Any

import pytest

from pylium.api import InvalidObject, validate
from tests.unit.policy.conftest import RESULTS
from tests.unit.policy.netpol_model import CASES_FILE, load_cases, run_case

DATA = load_cases()
MISSING = f"no conformance cases at {CASES_FILE.resolve()} (the shared directory is absent)"
CASES: list[dict[str, Any]] = (DATA or {}).get("cases") or []


@pytest.mark.skipif(DATA is None, reason=MISSING)
def test_case_count() -> None:
    """The set has its 129 cases, so a truncated file cannot pass silently."""
    assert len(CASES) == 129
    assert len({c["id"] for c in CASES}) == 129


@pytest.mark.skipif(DATA is None, reason=MISSING)
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case(case: dict[str, Any]) -> None:
    """Every probe of the case, at every step, matches its expected table."""
    assert DATA is not None
    failures = run_case(DATA["model"], case)
    RESULTS[case["id"]] = (case["name"], len(failures))
    assert not failures, f"{len(failures)} mismatches:\n" + "\n".join(failures[:20])


@pytest.mark.skipif(DATA is None, reason=MISSING)
def test_api_validation() -> None:
    """endPort shapes are accepted or rejected as the API server does."""
    assert DATA is not None
    for item in DATA["api_validation"]:
        obj = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "endport", "namespace": "x"},
            "spec": {"podSelector": {}, "egress": [{"ports": item["ports"]}]},
        }
        if item["apiserver"] == "accept":
            validate(obj)
        else:
            with pytest.raises(InvalidObject, match=r"spec\.egress\[0\]\.ports\[0\]\.endPort"):
                validate(obj)
