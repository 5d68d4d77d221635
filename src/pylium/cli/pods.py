"""`pylium exec` and `pylium probe`: act from inside a lab pod's network namespace."""

from __future__ import annotations

import json
import os
import sys

import click

from pylium.cli.labctx import load_lab


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.option("-n", "--namespace", default="default", show_default=True)
@click.argument("pod")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_cmd(ctx: click.Context, namespace: str, pod: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in POD's network namespace and cgroup (`pylium exec web -- ip addr`).

    Standard input, output and the exit code pass through.
    """
    from pylium.lab.podaccess import PodAccessError, find_pod

    lab = load_lab(ctx)
    try:
        handle = find_pod(lab, namespace, pod)
    except PodAccessError as e:
        raise click.ClickException(str(e)) from None
    handle.enter()
    try:
        os.execvp(command[0], list(command))
    except OSError as e:
        click.echo(f"exec {command[0]}: {e.strerror}", err=True)
        sys.exit(127)


@click.command("probe")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--protocol", type=click.Choice(["tcp", "udp"]), default="tcp", show_default=True)
@click.option("--timeout", type=float, default=2.0, show_default=True, help="seconds")
@click.option(
    "--from-world",
    is_flag=True,
    help="Probe from the lab's world namespace (the outside) instead of a pod; give no POD.",
)
@click.option(
    "--show-peer",
    is_flag=True,
    help="Ask the pod server for the client address it saw: answers `NAME peer=IP`.",
)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.argument("pod_or_destination", metavar="[POD] DEST:PORT")
@click.argument("destination", required=False, metavar="")
@click.pass_context
def probe_cmd(
    ctx: click.Context,
    namespace: str,
    protocol: str,
    timeout: float,
    from_world: bool,
    show_peer: bool,
    output: str,
    pod_or_destination: str,
    destination: str | None,
) -> None:
    """From inside POD (or the world with --from-world), connect (tcp) or send (udp) to
    DEST:PORT and print the answer.

    DEST is an IP or a pod (`POD` in the same namespace, or `NS/POD`). Exit 0 means connected
    and answered; 1 otherwise, with the reason (refused, timeout, no answer).
    """
    from pylium.lab import netns
    from pylium.lab.podaccess import PodAccessError, find_pod, resolve_destination
    from pylium.lab.probe import probe
    from pylium.lab.record import world_netns

    if from_world == (destination is not None):
        want = "DEST:PORT only with --from-world" if from_world else "POD DEST:PORT"
        raise click.UsageError(f"expected {want}")
    target = destination or pod_or_destination
    dest, sep, port_text = target.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise click.BadParameter(f"{target!r}: expected DEST:PORT", param_hint="DEST:PORT")
    lab = load_lab(ctx)
    try:
        ip = resolve_destination(lab, namespace, dest)
        if from_world:
            netns.enter(netns.netns_path(world_netns(lab.name)))
        else:
            find_pod(lab, namespace, pod_or_destination).enter()
    except PodAccessError as e:
        raise click.ClickException(str(e)) from None
    result = probe(ip, int(port_text), "udp" if protocol == "udp" else "tcp", timeout, show_peer)
    if output == "json":
        click.echo(json.dumps(result.to_json()))
    elif result.ok:
        click.echo(result.answer)
    else:
        click.echo(f"{ip}:{port_text}/{protocol}: {result.reason}", err=True)
    sys.exit(0 if result.ok else 1)
