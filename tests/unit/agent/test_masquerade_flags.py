"""The agent's BPF masquerade settings: off unless asked for, and never without the CIDR it must
leave alone (masquerading pod-to-pod traffic would hide every pod behind its node)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pylium.agent.cells import Agent, AgentParams
from pylium.agent.main import parse_args

BASE = ["--node", "n1", "--store", "sqlite:////tmp/unused.db"]


def test_that_masquerade_is_off_by_default():
    params = parse_args(BASE)
    assert (params.masquerade, params.native_routing_cidr, params.uplink) == (False, None, "eth0")


def test_that_the_flags_reach_the_agent_params():
    params = parse_args(
        [
            *BASE,
            "--enable-bpf-masquerade",
            "--native-routing-cidr",
            "10.244.0.0/16",
            "--uplink",
            "up0",
        ]
    )
    assert (params.masquerade, params.native_routing_cidr, params.uplink) == (
        True,
        "10.244.0.0/16",
        "up0",
    )


def test_that_masquerade_without_the_native_routing_cidr_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args([*BASE, "--enable-bpf-masquerade"])
    assert "--native-routing-cidr" in capsys.readouterr().err


@pytest.mark.parametrize("cidr", [None, "10.244.0.0/33"])
def test_that_the_agent_refuses_masquerade_without_a_valid_cidr(tmp_path: Path, cidr):
    params = AgentParams(
        node="n1",
        store_url="unused",
        socket=tmp_path / "agent.sock",
        state_dir=tmp_path / "state",
        bpf_dir=tmp_path / "bpf",
        masquerade=True,
        native_routing_cidr=cidr,
    )
    with pytest.raises(ValueError):
        Agent(params)
