"""The agent's service LB settings: random selection and Cilium's Maglev table size unless
asked otherwise; only Cilium's prime sizes are accepted."""

from __future__ import annotations

import pytest

from pylium.agent.main import parse_args
from pylium.datapath.lbconfig import LBConfig
from pylium.loadbalancer.model import Algorithm

BASE = ["--node", "n1", "--store", "sqlite:////tmp/unused.db"]


def test_that_the_lb_defaults_are_random_and_16381():
    assert parse_args(BASE).lb == LBConfig(Algorithm.RANDOM, 16381)


def test_that_the_lb_flags_reach_the_agent_params():
    params = parse_args(
        [*BASE, "--bpf-lb-algorithm", "maglev", "--bpf-lb-maglev-table-size", "251"]
    )
    assert params.lb == LBConfig(Algorithm.MAGLEV, 251)


def test_that_a_table_size_that_is_not_a_listed_prime_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args([*BASE, "--bpf-lb-maglev-table-size", "1000"])
    assert "--bpf-lb-maglev-table-size" in capsys.readouterr().err
