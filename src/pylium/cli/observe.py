"""`pylium observe`: the lab's flows (every node's agent), like `hubble observe`."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pylium.cli.labctx import load_lab

if TYPE_CHECKING:
    from pylium.hubble.filters import FlowQuery

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_LAST = 20
"""Flows shown without --last when not following (hubble observe's default)."""


_SIDED = {
    "pod": "[NAMESPACE/]POD (name prefix)",
    "ip": "an IP or CIDR",
    "port": "a port",
    "label": "a label selector (k8s:app=web, app=web,tier!=db)",
    "identity": "a security identity (number or reserved name: world, host, ...)",
    "service": "[NAMESPACE/]SERVICE (name prefix)",
}
"""Options with a from-/to- form, as hubble observe's: the value and what it means."""


def _sided_options(command: F) -> F:
    for name, meaning in reversed(_SIDED.items()):
        for side, text in (("to", "to"), ("from", "from"), ("", "from or to")):
            flag = f"--{side}-{name}" if side else f"--{name}"
            decls = [flag, "-l"] if flag == "--label" else [flag]
            command = click.option(*decls, multiple=True, help=f"Flows {text} {meaning}.")(command)
    return command


@click.command("observe")
@click.option("--last", type=click.IntRange(min=0), help="Show the newest N flows first.")
@click.option("--first", type=click.IntRange(min=1), help="Show the oldest N flows.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new flows.")
@click.option(
    "--since", metavar="TIME", help="Flows at or after TIME: RFC 3339 or ago (30s, 5m, 1h30m)."
)
@click.option("--until", metavar="TIME", help="Flows at or before TIME (as --since).")
@_sided_options
@click.option(
    "-n",
    "--namespace",
    multiple=True,
    help="Namespace of pods named without one; alone: flows from or to the namespace.",
)
@click.option("--verdict", multiple=True, help="FORWARDED, DROPPED, ...")
@click.option("--protocol", multiple=True, help="tcp, udp or icmp.")
@click.option("-t", "--type", "type", multiple=True, help="Event type: trace, drop or trace-sock.")
@click.option("--node-name", multiple=True, help="Flows of this node (a trailing * matches).")
@click.option("--traffic-direction", multiple=True, help="ingress or egress.")
@click.option("--drop-reason-desc", multiple=True, help="A drop reason name: POLICY_DENIED, ...")
@click.option(
    "--not",
    "negated",
    multiple=True,
    metavar="OPTION=VALUE",
    help="Exclude flows matching this filter, e.g. --not protocol=icmp.",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["compact", "dict", "table", "json"]),
    default="compact",
    show_default=True,
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
    /,
    last: int | None,
    first: int | None,
    follow: bool,
    since: str | None,
    until: str | None,
    negated: tuple[str, ...],
    output: str,
    server: str | None,
    **filters: tuple[str, ...],
) -> None:
    """Show flows of every node of the lab, merged in time order.

    Filters of different options must all match; values of one option are alternatives.
    Without --follow the newest 20 flows are shown (or --last N, or the oldest --first N).
    """
    from pylium.agent.client import AgentClient
    from pylium.hubble.filters import FlowQuery, InvalidFilter
    from pylium.hubble.flow import format_time
    from pylium.hubble.merge import NodeSource, follow_flows, history

    if first is not None and (follow or last is not None):
        raise click.UsageError("--first cannot be combined with --follow or --last")
    since_ns = _time_arg(since, "--since")
    until_ns = _time_arg(until, "--until")
    try:
        query = FlowQuery(**filters, negated=_negated(negated))
        query.filters()  # validate here: a bad value is the user's, not the agent's
    except InvalidFilter as err:
        raise click.BadParameter(str(err)) from None

    if first is not None:
        count = first
    elif last is not None:
        count = last
    else:
        count = 0 if follow or since_ns is not None else DEFAULT_LAST
    printer = Printer(output)
    if server is not None:
        try:
            request = _Request(count, first is not None, follow, since_ns, until_ns)
            for resp in _grpc_flows(server, query, request):
                printer.show(resp)
                if follow:
                    printer.flush()
        except KeyboardInterrupt:
            pass
        printer.flush()
        return

    lab = load_lab(ctx)
    sources = [NodeSource(n.name, AgentClient(n.agentSocket, timeout=10)) for n in lab.nodes]
    url_params = query.to_params()
    if until_ns is not None:
        url_params.append(("until", format_time(until_ns)))
    # Without a count, --since asks for every flow since then (as hubble observe).
    backlog = count if count or since_ns is None else 1_000_000
    shown, failures = history(sources, url_params, backlog, first is not None, since_ns)
    for failure in failures:
        click.echo(f"warning: node {failure.node}: {failure.error}", err=True)
    if failures and len(failures) == len(sources):
        raise click.ClickException("no agent of the lab answered")
    for resp in shown:
        printer.show(resp)
    printer.flush()
    if follow:
        alive = [s for s in sources if s.node not in {f.node for f in failures}]
        try:
            for resp in follow_flows(alive, url_params):
                printer.show(resp)
                printer.flush()
        except KeyboardInterrupt:
            pass


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9}
_UNIT_NS["h"] = 60 * _UNIT_NS["m"]


def _time_arg(value: str | None, option: str, now_ns: int | None = None) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 time or of a duration ago (`5m`, `1h30m`,
    Go's duration syntax, as hubble observe takes)."""
    from pylium.hubble.flow import parse_time

    if value is None:
        return None
    if re.fullmatch(rf"(?:{_DURATION.pattern})+", value):
        ago = sum(int(float(n) * _UNIT_NS[unit]) for n, unit in _DURATION.findall(value))
        return (now_ns if now_ns is not None else time.time_ns()) - ago
    try:
        return parse_time(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: an RFC 3339 time or a duration (30s, 5m, 1h30m)", param_hint=option
        ) from None


@dataclass(frozen=True)
class _Request:
    number: int
    first: bool
    follow: bool
    since_ns: int | None
    until_ns: int | None


def _grpc_flows(server: str, query: FlowQuery, req: _Request) -> Iterator[dict[str, object]]:
    """GetFlows over gRPC, each response in Hubble's JSON form (as the REST API's lines)."""
    import grpc

    from pylium.hubble.convert import filter_to_proto, set_time, to_json
    from pylium.hubble.proto import observer_pb2, observer_pb2_grpc

    whitelist, blacklist = query.filters()
    request = observer_pb2.GetFlowsRequest(
        number=req.number,
        first=req.first,
        follow=req.follow,
        whitelist=[filter_to_proto(f) for f in whitelist],
        blacklist=[filter_to_proto(f) for f in blacklist],
    )
    if req.since_ns is not None:
        set_time(request.since, req.since_ns)
    if req.until_ns is not None:
        set_time(request.until, req.until_ns)
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


class Printer:
    """Prints responses in one of hubble observe's formats; `table` rows wait for flush()
    so that their columns line up."""

    def __init__(self, output: str) -> None:
        self.output = output
        self._rows: list[tuple[str, ...]] = []
        self._header_done = False
        self._flows = 0

    def show(self, resp: dict[str, object]) -> None:
        from pylium.hubble.flow import Flow, compact, dict_text, table_row

        if self.output == "json":
            if "node_failure" not in resp:
                click.echo(json.dumps(resp, separators=(",", ":")))
            else:
                click.echo(f"warning: {json.dumps(resp['node_failure'])}", err=True)
            return
        if isinstance(data := resp.get("flow"), dict):
            flow = Flow.from_json(data)
            if self.output == "dict":
                if self._flows:
                    click.echo(DICT_SEPARATOR)
                click.echo(dict_text(flow))
            elif self.output == "table":
                self._rows.append(table_row(flow))
            else:
                click.echo(compact(flow))
            self._flows += 1
        elif isinstance(lost := resp.get("lost_events"), dict):
            click.echo(f"EVENTS LOST: {lost.get('source')} {lost.get('num_events_lost')}", err=True)
        elif isinstance(status := resp.get("node_status"), dict):
            nodes = ", ".join(str(n) for n in status.get("node_names", []))
            click.echo(f"warning: {status.get('state_change')}: {nodes}", err=True)
        elif isinstance(failed := resp.get("node_failure"), dict):
            click.echo(f"warning: node {failed.get('node')}: {failed.get('error')}", err=True)

    def flush(self) -> None:
        """Print the buffered table rows (with the header, the first time)."""
        from pylium.hubble.flow import TABLE_HEADER

        if self.output != "table" or not (self._rows or not self._header_done):
            return
        rows = self._rows if self._header_done else [TABLE_HEADER, *self._rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_HEADER))]
        for row in rows:
            click.echo("   ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        self._rows.clear()
        self._header_done = True


DICT_SEPARATOR = "------------"
"""What `hubble observe -o dict` prints between two flows."""
