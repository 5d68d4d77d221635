"""The `pylium` command: kubectl-like verbs over a lab or cluster.

Each command lives in its own module and is imported only when it runs, so `pylium --help` and
quick commands stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

# command name -> "module:attribute" of its click command, one module per concern.
COMMANDS: dict[str, str] = {
    "apply": "pylium.cli.objects:apply_cmd",
    "get": "pylium.cli.objects:get_cmd",
    "delete": "pylium.cli.objects:delete_cmd",
    "lab": "pylium.cli.lab:lab_group",
    "exec": "pylium.cli.pods:exec_cmd",
    "probe": "pylium.cli.pods:probe_cmd",
    "observe": "pylium.cli.observe:observe_cmd",
    "bench": "pylium.cli.bench:bench_group",
    "connectivity": "pylium.cli.connectivity:connectivity_group",
    "conformance": "pylium.cli.conformance:conformance_group",
    "policy": "pylium.cli.policy:policy_group",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--lab",
    envvar="PYLIUM_LAB",
    default="lab",
    show_default=True,
    help="The lab to act on (or set PYLIUM_LAB).",
)
@click.pass_context
def cli(ctx: click.Context, lab: str) -> None:
    """pylium: Kubernetes networking in the style of Cilium, with an eBPF datapath."""
    ctx.obj = {"lab": lab}


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    return cli.main(args=argv, prog_name="pylium")
