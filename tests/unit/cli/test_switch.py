"""`--flag true|false` switches: both the click and the argparse form hand the command a bool,
None when the flag is absent and has no default, and refuse any other word."""

from __future__ import annotations

import argparse

import click
import pytest
from click.testing import CliRunner

from pylium.cli.switch import add_switch, switch_option


@click.command()
@switch_option("--on", default=True, show_default=True, help="h")
@switch_option("--maybe", help="h")
def _cmd(on: bool, maybe: bool | None) -> None:
    click.echo(f"{on!r} {maybe!r}")


@pytest.mark.parametrize(
    ("args", "out"),
    [([], "True None"), (["--on", "false", "--maybe", "true"], "False True")],
)
def test_that_the_click_switch_passes_a_bool_or_none(args, out):
    assert CliRunner().invoke(_cmd, args).output.strip() == out


def test_that_the_click_switch_refuses_other_words():
    assert CliRunner().invoke(_cmd, ["--maybe", "yes"]).exit_code == 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_switch(parser, "--on", default=False, help="h")
    add_switch(parser, "--maybe", help="h")
    return parser


def test_that_the_argparse_switch_stores_a_bool_or_none():
    args = _parser().parse_args([])
    assert (args.on, args.maybe) == (False, None)
    args = _parser().parse_args(["--on", "true", "--maybe", "false"])
    assert (args.on, args.maybe) == (True, False)


def test_that_the_argparse_switch_refuses_other_words():
    with pytest.raises(SystemExit):
        _parser().parse_args(["--on", "yes"])
