"""`pylium conformance netpol`: the shared NetworkPolicy truth-table cases through the lab's
datapath (see `pylium.lab.conformance.netpol`), a PASS/FAIL line per case, exit 1 on any
failure."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from pylium.cli.labctx import load_lab
from pylium.lab.conformance.cases import CASES_FILE, load_cases


@click.group("conformance")
def conformance_group() -> None:
    """Run conformance case files against the lab."""


@conformance_group.command("netpol")
@click.option(
    "--cases",
    "cases_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=CASES_FILE,
    show_default=True,
    help="The truth-table file.",
)
@click.option("--case", "case_ids", multiple=True, metavar="ID", help="Run only these cases.")
@click.option(
    "--via",
    type=click.Choice(["pod", "service"]),
    default="pod",
    show_default=True,
    help="Probe pod IPs, or each pod's ClusterIP Service s-<ns>-<pod>.",
)
@click.option(
    "--converge",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds a wrong cell is probed again before it counts.",
)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
def netpol_cmd(
    ctx: click.Context,
    cases_file: Path,
    case_ids: tuple[str, ...],
    via: str,
    converge: float,
    output: str,
) -> None:
    """Deploy the truth-table model (namespaces x, y, z; pods a, b, c serving 80 and 81 on
    TCP and UDP; a Service per pod), run each case's policies and steps, probe every pod pair
    after each and compare with the table and with `pylium policy trace`."""
    from pylium.lab.conformance.netpol import CaseResult, created_namespaces, harness, sctp_missing
    from pylium.store import open_store

    lab = load_lab(ctx)
    data = load_cases(cases_file)
    if data is None:
        raise click.ClickException(f"no case file at {cases_file}")
    cases: list[dict[str, Any]] = data["cases"]
    if case_ids:
        unknown = set(case_ids) - {c["id"] for c in cases}
        if unknown:
            raise click.ClickException(f"no such case: {', '.join(sorted(unknown))}")
        cases = [c for c in cases if c["id"] in case_ids]
    text = output == "text"
    if text and (why := sctp_missing()):
        click.echo(why)

    async def work() -> list[CaseResult]:
        store = open_store(lab.store)
        results = []
        try:
            with harness(lab, store, data["model"], "service" if via == "service" else "pod",
                         converge) as h:  # fmt: skip
                await h.setup(created_namespaces(cases))
                for case in cases:
                    result = await h.run_case(case)
                    results.append(result)
                    if text:
                        _show(result)
        finally:
            await store.close()
        return results

    start = time.monotonic()
    results = asyncio.run(work())
    seconds = time.monotonic() - start
    passed = sum(r.passed for r in results)
    mode = f"via {via}, {lab.routing} routing, lab {lab.name!r}"
    if output == "json":
        report = {"lab": lab.name, "routing": lab.routing, "via": via, "passed": passed,
                  "total": len(results), "seconds": round(seconds, 1),
                  "cases": [r.to_json() for r in results]}  # fmt: skip
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"{passed}/{len(results)} cases passed ({mode}) in {seconds:.0f} s")
    sys.exit(0 if passed == len(results) else 1)


def _show(result: Any) -> None:
    mark = "PASS" if result.passed else "FAIL"
    click.echo(f"{mark} {result.id:<8} {result.seconds:5.1f} s  {result.name}")
    for wrong in result.wrong:
        click.echo(f"       {wrong}")
