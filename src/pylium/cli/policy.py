"""`pylium policy trace` and `pylium get policies`: the policy engine over the store's objects.

Both read Namespaces, Pods, CiliumIdentities and the three policy kinds from the store and
compute policies in this process (the same code the agent runs), so they work with or without
agents. Identity numbers are the store's CiliumIdentities; a label set without one yet gets the
next free number here (the agent allocates the real one).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from pylium.cli.objects import _run, store_option
from pylium.cli.output import NONE, fail, render_table
from pylium.cli.printers import POLICY_COLUMNS

if TYPE_CHECKING:
    from pylium.policy import Repository
    from pylium.store import Store

ENFORCEMENT = ("default", "always", "never")


async def _repository(store: Store, enforcement: str, audit: bool) -> Repository:
    from pylium.identity import identity_from_object
    from pylium.policy import (
        KINDS,
        Enforcement,
        IdentityNumbers,
        PolicyConfig,
        Repository,
        load,
    )

    identities, _ = await store.list("CiliumIdentity", None)
    known = {i.id: i.labels for i in map(identity_from_object, identities)}
    config = PolicyConfig(Enforcement(enforcement), audit)
    repo = Repository(config, IdentityNumbers(known))
    objects: list[dict[str, Any]] = []
    for kind in ("Namespace", "Pod", *KINDS):
        found, _ = await store.list(kind, None)
        objects += found
    load(repo, objects)
    return repo


def _port(value: str) -> tuple[int, str]:
    number, _, protocol = value.partition("/")
    protocol = (protocol or "TCP").upper()
    protocol = {"ICMPV6": "ICMPv6"}.get(protocol, protocol)
    if not number.isdigit() or protocol not in ("TCP", "UDP", "SCTP", "ICMP", "ICMPv6"):
        raise click.BadParameter(f"{value!r}: want PORT/PROTO, e.g. 80/TCP")
    return int(number), protocol


@click.group("policy")
def policy_group() -> None:
    """Network policy: trace a connection through the computed policies."""


@policy_group.command("trace")
@click.option("--from", "source", required=True, metavar="NS/POD", help="The client pod.")
@click.option("--to", "destination", required=True, metavar="NS/POD", help="The server pod.")
@click.option("--port", "port", required=True, metavar="P/PROTO", help="e.g. 80/TCP, 53/UDP.")
@click.option("-o", "--output", type=click.Choice(("json",)), help="Output format.")
@click.option(
    "--enforcement",
    type=click.Choice(ENFORCEMENT),
    default="default",
    show_default=True,
    help="Policy enforcement mode to evaluate with.",
)
@click.option("--audit", is_flag=True, help="Evaluate in audit mode (drops become AUDIT).")
@store_option
@click.pass_context
def trace_cmd(
    ctx: click.Context,
    source: str,
    destination: str,
    port: str,
    output: str | None,
    enforcement: str,
    audit: bool,
    store_url: str | None,
) -> None:
    """Would NS/POD reach NS/POD on P/PROTO? Prints the verdict of the source's egress and
    the destination's ingress, and the rules that decided each. Exits 0 when allowed (or
    audited), 1 when denied."""
    from pylium.policy import trace

    number, protocol = _port(port)

    async def work(store: Store) -> Repository:
        return await _repository(store, enforcement, audit)

    repo = _run(ctx, store_url, work)
    endpoints = repo.endpoints()
    for pod in (source, destination):
        if pod not in endpoints:
            fail(f'pod "{pod}" not found (give NAMESPACE/NAME)')
    result = trace(repo, source, destination, number, protocol)
    if output == "json":
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo("\n".join(result.lines()))
    if not result.allowed:
        raise click.exceptions.Exit(1)


def get_policies(
    ctx: click.Context, namespace: str | None, output: str | None, store_url: str | None
) -> None:
    """`pylium get policies`: every policy kind in one table (NAME, KIND, SELECTS)."""
    from pylium.policy import policy_ref

    async def work(store: Store) -> tuple[Repository, list[dict[str, Any]]]:
        repo = await _repository(store, "default", False)
        policies: list[dict[str, Any]] = []
        for kind in ("NetworkPolicy", "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"):
            found, _ = await store.list(kind, None)
            policies += [
                p
                for p in found
                if namespace is None or p["metadata"].get("namespace") in (None, namespace)
            ]
        return repo, policies

    repo, policies = _run(ctx, store_url, work)
    rows = []
    for obj in policies:
        selected = repo.selected_endpoints(policy_ref(obj))
        rows.append(
            {
                "namespace": obj["metadata"].get("namespace", ""),
                "name": obj["metadata"]["name"],
                "kind": obj["kind"],
                "selects": selected,
            }
        )
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        where = f" in {namespace} namespace" if namespace else ""
        click.echo(f"No resources found{where}.", err=True)
        return
    headers = [c.header for c in POLICY_COLUMNS]
    table = [[c.cell(r) for c in POLICY_COLUMNS] for r in rows]
    if namespace is None:
        headers = ["NAMESPACE", *headers]
        table = [[r["namespace"] or NONE, *t] for r, t in zip(rows, table, strict=True)]
    click.echo(render_table(headers, table))
