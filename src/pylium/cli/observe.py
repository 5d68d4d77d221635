"""`pylium observe`: the lab's flows (every node's agent), like `hubble observe`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

from pylium.cli.labctx import load_lab

if TYPE_CHECKING:
    from pylium.hubble.filters import FlowQuery

DEFAULT_LAST = 20
"""Flows shown without --last when not following (hubble observe's default)."""


@click.command("observe")
@click.option("--last", type=click.IntRange(min=0), help="Show the newest N flows first.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new flows.")
@click.option("--pod", multiple=True, help="Flows from or to [NAMESPACE/]POD (name prefix).")
@click.option("--from-pod", multiple=True, help="Flows from [NAMESPACE/]POD.")
@click.option("--to-pod", multiple=True, help="Flows to [NAMESPACE/]POD.")
@click.option(
    "-n",
    "--namespace",
    multiple=True,
    help="Namespace of pods named without one; alone: flows from or to the namespace.",
)
@click.option("--ip", multiple=True, help="Flows from or to an IP or CIDR.")
@click.option("--from-ip", multiple=True, help="Flows from an IP or CIDR.")
@click.option("--to-ip", multiple=True, help="Flows to an IP or CIDR.")
@click.option("--port", multiple=True, help="Flows from or to a port.")
@click.option("--from-port", multiple=True, help="Flows from a port.")
@click.option("--to-port", multiple=True, help="Flows to a port.")
@click.option("--verdict", multiple=True, help="FORWARDED, DROPPED, ...")
@click.option("--protocol", multiple=True, help="tcp, udp or icmp.")
@click.option("-t", "--type", "types", multiple=True, help="Event type: trace or drop.")
@click.option(
    "--not",
    "negated",
    multiple=True,
    metavar="OPTION=VALUE",
    help="Exclude flows matching this filter, e.g. --not protocol=icmp.",
)
@click.option(
    "-o", "--output", type=click.Choice(["compact", "json"]), default="compact", show_default=True
)
@click.option(
    "--server",
    metavar="ADDR",
    help="Read from a Hubble Observer gRPC API (a relay or one node): unix:///PATH or "
    "HOST:PORT, instead of every agent's REST API.",
)
@click.pass_context
def observe_cmd(
    ctx: click.Context,
    last: int | None,
    follow: bool,
    pod: tuple[str, ...],
    from_pod: tuple[str, ...],
    to_pod: tuple[str, ...],
    namespace: tuple[str, ...],
    ip: tuple[str, ...],
    from_ip: tuple[str, ...],
    to_ip: tuple[str, ...],
    port: tuple[str, ...],
    from_port: tuple[str, ...],
    to_port: tuple[str, ...],
    verdict: tuple[str, ...],
    protocol: tuple[str, ...],
    types: tuple[str, ...],
    negated: tuple[str, ...],
    output: str,
    server: str | None,
) -> None:
    """Show flows of every node of the lab, merged in time order.

    Filters of different options must all match; values of one option are alternatives.
    Without --follow the newest 20 flows are shown (or --last N).
    """
    from pylium.agent.client import AgentClient
    from pylium.hubble.filters import FlowQuery, InvalidFilter
    from pylium.hubble.merge import NodeSource, follow_flows, history

    try:
        query = FlowQuery(
            pod=pod,
            from_pod=from_pod,
            to_pod=to_pod,
            namespace=namespace,
            ip=ip,
            from_ip=from_ip,
            to_ip=to_ip,
            port=port,
            from_port=from_port,
            to_port=to_port,
            verdict=verdict,
            protocol=protocol,
            type=types,
            negated=_negated(negated),
        )
        query.filters()  # validate here: a bad value is the user's, not the agent's
    except InvalidFilter as err:
        raise click.BadParameter(str(err)) from None

    count = last if last is not None else (0 if follow else DEFAULT_LAST)
    if server is not None:
        try:
            for resp in _grpc_flows(server, query, count, follow):
                _print(resp, output)
        except KeyboardInterrupt:
            pass
        return

    lab = load_lab(ctx)
    sources = [NodeSource(n.name, AgentClient(n.agentSocket, timeout=10)) for n in lab.nodes]
    url_params = query.to_params()
    shown, failures = history(sources, url_params, count)
    for failure in failures:
        click.echo(f"warning: node {failure.node}: {failure.error}", err=True)
    if failures and len(failures) == len(sources):
        raise click.ClickException("no agent of the lab answered")
    for resp in shown:
        _print(resp, output)
    if follow:
        alive = [s for s in sources if s.node not in {f.node for f in failures}]
        try:
            for resp in follow_flows(alive, url_params):
                _print(resp, output)
        except KeyboardInterrupt:
            pass


def _grpc_flows(
    server: str, query: FlowQuery, count: int, follow: bool
) -> Iterator[dict[str, object]]:
    """GetFlows over gRPC, each response in Hubble's JSON form (as the REST API's lines)."""
    import grpc

    from pylium.hubble.convert import filter_to_proto, to_json
    from pylium.hubble.proto import observer_pb2, observer_pb2_grpc

    whitelist, blacklist = query.filters()
    request = observer_pb2.GetFlowsRequest(
        number=count,
        follow=follow,
        whitelist=[filter_to_proto(f) for f in whitelist],
        blacklist=[filter_to_proto(f) for f in blacklist],
    )
    with grpc.insecure_channel(server) as channel:
        try:
            for resp in observer_pb2_grpc.ObserverStub(channel).GetFlows(request):
                yield to_json(resp)
        except grpc.RpcError as err:
            raise click.ClickException(f"{server}: {err.details()}") from None


def _negated(pairs: tuple[str, ...]) -> FlowQuery | None:
    from pylium.hubble.filters import FlowQuery

    if not pairs:
        return None
    params = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not value:
            raise click.BadParameter(f"{pair!r}: expected OPTION=VALUE", param_hint="--not")
        name = key.strip().lstrip("-").replace("_", "-")
        if name not in FlowQuery.option_names():
            choices = ", ".join(FlowQuery.option_names())
            raise click.BadParameter(f"{pair!r}: OPTION is one of {choices}", param_hint="--not")
        params.append((name, value))
    return FlowQuery.from_params(params)


def _print(resp: dict[str, object], output: str) -> None:
    from pylium.hubble.flow import Flow, compact

    if output == "json":
        if "node_failure" not in resp:
            click.echo(json.dumps(resp, separators=(",", ":")))
        else:
            click.echo(f"warning: {json.dumps(resp['node_failure'])}", err=True)
        return
    if isinstance(flow := resp.get("flow"), dict):
        click.echo(compact(Flow.from_json(flow)))
    elif isinstance(lost := resp.get("lost_events"), dict):
        click.echo(f"EVENTS LOST: {lost.get('source')} {lost.get('num_events_lost')}", err=True)
    elif isinstance(status := resp.get("node_status"), dict):
        nodes = ", ".join(str(n) for n in status.get("node_names", []))
        click.echo(f"warning: {status.get('state_change')}: {nodes}", err=True)
    elif isinstance(failed := resp.get("node_failure"), dict):
        click.echo(f"warning: node {failed.get('node')}: {failed.get('error')}", err=True)
