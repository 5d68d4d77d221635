"""`pylium connectivity test`: deploy test pods into the lab, probe, print each scenario's
result (as Cilium's command does), exit 1 on any failure."""

from __future__ import annotations

import json
import sys

import click

from pylium.cli.labctx import load_lab


@click.group("connectivity")
def connectivity_group() -> None:
    """Check the cluster's connectivity end to end."""


@connectivity_group.command("test")
@click.option(
    "--test",
    "pattern",
    default=None,
    help="Run only scenarios whose name matches (a leading ! skips those that match).",
)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
def test_cmd(ctx: click.Context, pattern: str | None, output: str) -> None:
    """Pod to pod (same node, other node), to services (ClusterIP, NodePort, session affinity,
    none without backends), from the world to NodePorts (also externalTrafficPolicy Local),
    LoadBalancer and external IPs, pod to world, pod to host; then, one at a time, policies
    (client egress, echo ingress, a deny, entities, CIDR), each removed after."""
    from pylium.lab.connectivity.deploy import NAMESPACE, DeployError
    from pylium.lab.connectivity.runner import ScenarioResult, run, select

    lab = load_lab(ctx)
    scenarios = select(pattern)
    if not scenarios:
        raise click.ClickException(f"--test {pattern!r} matches no scenario")

    def show(result: ScenarioResult) -> None:
        if output == "json":
            return
        mark = {"passed": "✅", "failed": "❌", "skipped": "⏭️ "}[result.status]
        click.echo(f"{mark} [{result.name}] {result.description}")
        if result.status == "skipped":
            click.echo("     skipped: the lab lacks what it needs (a second node)")
        for a in result.actions:
            where = f"{a.target} {a.destination}:{a.port}/{a.protocol}"
            outcome = f"answered {a.answer}" if a.ok and a.answer else a.reason
            click.echo(f"   {'✅' if a.ok else '❌'} {a.source} → {where}: {outcome}")

    if output != "json":
        click.echo(f"🏃 {len(scenarios)} scenario(s) in lab {lab.name!r} (namespace {NAMESPACE})")
    try:
        results = run(lab, scenarios, show)
    except DeployError as e:
        raise click.ClickException(str(e)) from None
    failed = [r.name for r in results if r.status == "failed"]
    passed = sum(1 for r in results if r.status == "passed")
    skipped = sum(1 for r in results if r.status == "skipped")
    if output == "json":
        report = {
            "lab": lab.name,
            "passed": passed,
            "failed": len(failed),
            "skipped": skipped,
            "scenarios": [r.to_json() for r in results],
        }
        click.echo(json.dumps(report, indent=2))
    elif failed:
        click.echo(f"❌ {len(failed)}/{len(results)} scenarios failed: {', '.join(failed)}")
    else:
        click.echo(f"✅ {passed}/{len(results)} scenarios passed, {skipped} skipped")
    sys.exit(1 if failed else 0)
