"""`pylium bench ...`: benchmarks that print ratios measured side by side in one run."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import click

from pylium.bench import cni

output_option = click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True
)


def _require_root(command: str, why: str) -> None:
    if os.geteuid() != 0:
        raise click.ClickException(f"pylium bench {command} needs root ({why})")


def _progress(line: str) -> None:
    click.echo(line, err=True)


def _print(output: str, as_json: object, as_text: str) -> None:
    click.echo(json.dumps(as_json, indent=2) if output == "json" else as_text)


@click.group("bench")
def bench_group() -> None:
    """Benchmarks (need root: they build scratch network namespaces)."""


@bench_group.command("cni")
@click.option(
    "--count",
    type=click.IntRange(1, cni.MAX_COUNT),
    default=100,
    show_default=True,
    help="Pods to ADD then DEL per plugin.",
)
@output_option
def cni_cmd(count: int, output: str) -> None:
    """ADD/DEL latency and pods/s: pylium-cni against Debian's bridge + host-local."""
    _require_root("cni", "it creates network namespaces")
    summaries = cni.run_bench(count, _progress)
    _print(output, cni.to_json(count, summaries), cni.render_text(count, summaries))


@bench_group.command("datapath")
@click.option(
    "--duration",
    default=5,
    show_default=True,
    type=click.IntRange(1, 600),
    help="Seconds per test and topology (that many interleaved 1 s rounds).",
)
@output_option
@click.option(
    "--cross-node",
    is_flag=True,
    help="Pod to pod across two nodes: native and tunnel labs against plain kernel routing.",
)
def datapath_cmd(duration: int, output: str, cross_node: bool) -> None:
    """Pod to pod: pylium's programs against a bare veth and plain kernel routing."""
    from pylium.bench import datapath, datapath_xnode

    _require_root("datapath", "it creates namespaces")
    if cross_node:
        xnode = datapath_xnode.run_bench(duration, _progress)
        _print(output, datapath_xnode.to_json(xnode), datapath_xnode.render_text(xnode))
        return
    report = datapath.run_bench(duration, _progress)
    _print(output, datapath.to_json(report), datapath.render_text(report))


@bench_group.command("services")
@click.option(
    "--sizes",
    default="1,1000,10000,30000",
    show_default=True,
    help="Comma-separated numbers of services (2 backends each) to program.",
)
@output_option
def services_cmd(sizes: str, output: str) -> None:
    """Services: eBPF socket LB against kube-proxy's iptables and nftables modes."""
    from pylium.bench import services

    _require_root("services", "it creates namespaces")
    try:
        counts = [int(n) for n in sizes.split(",") if n.strip()]
    except ValueError:
        raise click.ClickException(f"--sizes {sizes!r}: expected numbers like 1,1000") from None
    if not counts or not all(1 <= n <= services.MAX_SIZE for n in counts):
        raise click.ClickException(f"--sizes: each from 1 to {services.MAX_SIZE}")
    results = services.run_bench(counts, _progress)
    _print(output, services.to_json(results), services.render_text(results))


@bench_group.command("flows")
@click.option(
    "--seconds",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0.1, 60),
    help="Seconds per producer run.",
)
@click.option(
    "--pod-seconds",
    default=10,
    show_default=True,
    type=click.IntRange(1, 600),
    help="Interleaved 1-second rounds per test of the two-pod export on/off measurement.",
)
@output_option
def flows_cmd(seconds: float, pod_seconds: int, output: str) -> None:
    """Flow events/s the observer decodes, enriches and serves without loss, and what flow
    export costs: per packet in from-container, and two pods' request/response and
    connection rates, export on against off."""
    from pylium.bench import flows

    _require_root("flows", "it loads BPF programs and creates namespaces")
    report = flows.run_bench(seconds, progress=_progress, pod_seconds=pod_seconds)
    _print(output, flows.to_json(report), flows.render_text(report))


@bench_group.command("policy")
@click.option(
    "--lab",
    "in_lab",
    is_flag=True,
    help="Also time apply-to-enforced in a 3-node lab (po<random>, removed at the end).",
)
@output_option
def policy_cmd(in_lab: bool, output: str) -> None:
    """Policy computation for 1 000 rules over 3 000 identities: full and incremental, and
    policy-map entries per endpoint; with --lab, apply-to-enforced on every node."""
    from pylium.bench import policy

    report = policy.run_compute(_progress)
    data: dict[str, object] = {"computation": policy.to_json(report)}
    text = policy.render_text(report)
    if in_lab:
        _require_root("policy --lab", "it brings up a lab")
        enforce = policy.run_enforce(_progress)
        data["enforce"] = asdict(enforce)
        text += "\n" + policy.render_enforce(enforce)
    _print(output, data, text)
