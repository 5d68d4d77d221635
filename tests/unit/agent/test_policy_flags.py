"""The agent's network policy settings: Cilium's defaults unless asked otherwise."""

from __future__ import annotations

import pytest

from pylium.agent.main import parse_args
from pylium.policy import Enforcement, PolicyConfig

BASE = ["--node", "n1", "--store", "sqlite:////tmp/unused.db"]


def test_that_policy_enforcement_is_default_without_audit():
    assert parse_args(BASE).policy == PolicyConfig(Enforcement.DEFAULT, audit=False)


def test_that_the_policy_flags_reach_the_agent_params():
    params = parse_args([*BASE, "--policy-enforcement", "always", "--policy-audit-mode"])
    assert params.policy == PolicyConfig(Enforcement.ALWAYS, audit=True)


def test_that_an_unknown_enforcement_mode_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args([*BASE, "--policy-enforcement", "sometimes"])
    assert "--policy-enforcement" in capsys.readouterr().err
