"""Boolean flags spelled as Cilium's `--flag true|false`, for the click CLI and the argparse
daemons alike: the word is parsed here once and the commands receive a bool (None: not given)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

CHOICES = ["true", "false"]

F = TypeVar("F", bound=Callable[..., Any])


def _to_bool(_ctx: click.Context, _param: click.Parameter, value: str | None) -> bool | None:
    return None if value is None else value == "true"


def switch_option(
    flag: str, help: str, default: bool | None = None, show_default: bool = False
) -> Callable[[F], F]:
    """A click option taking true|false; the command's parameter is a bool or None."""
    return click.option(
        flag,
        type=click.Choice(CHOICES),
        default=None if default is None else ("true" if default else "false"),
        show_default=show_default,
        callback=_to_bool,
        help=help,
    )


class _StoreSwitch(argparse.Action):
    """Stores the chosen word as a bool (argparse has checked it against CHOICES)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values == "true")


def add_switch(
    parser: argparse.ArgumentParser, flag: str, help: str, default: bool | None = None
) -> None:
    """An argparse option taking true|false; its attribute is a bool or None."""
    parser.add_argument(flag, choices=CHOICES, action=_StoreSwitch, default=default, help=help)
