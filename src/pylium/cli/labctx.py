"""The lab a command acts on (`--lab` / PYLIUM_LAB), shared by the lab-facing commands."""

from __future__ import annotations

import os

import click

from pylium.lab.record import LabRecord, load


def require_root() -> None:
    """Labs make namespaces and cgroups: refuse early, with the reason, when not root."""
    if os.geteuid() != 0:
        raise click.ClickException("lab commands need root (namespaces, cgroups, BPF)")


def lab_name(ctx: click.Context) -> str:
    """The lab named by the global --lab option."""
    return str((ctx.find_root().obj or {}).get("lab", "lab"))


def load_lab(ctx: click.Context, name: str | None = None) -> LabRecord:
    """The record of the lab (`name`, else --lab); a clear error if it does not exist."""
    require_root()
    lab = name or lab_name(ctx)
    rec = load(lab)
    if rec is None:
        raise click.ClickException(f"no lab {lab!r}: start one with `pylium lab up --name {lab}`")
    return rec
