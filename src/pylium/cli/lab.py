"""`pylium lab up|down|status|demo`: a cluster's networking on this machine (DESIGN §5)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from pylium.cli.labctx import lab_name, load_lab, require_root
from pylium.cli.switch import switch_option


def _progress(message: str) -> None:
    click.echo(click.style(f"• {message}", dim=True), err=True)


@click.group("lab")
def lab_group() -> None:
    """Run a cluster's networking out of network namespaces on this machine."""


@lab_group.command("up")
@click.option("--name", default=None, help="Lab name (default: --lab).")
@click.option("--nodes", type=int, default=1, show_default=True)
@click.option(
    "--routing",
    type=click.Choice(["native", "tunnel"]),
    default="native",
    show_default=True,
    help="native: routes to each node's pod CIDR through the underlay; tunnel: VXLAN.",
)
@click.option(
    "--store",
    default="sqlite",
    show_default=True,
    help="sqlite (a file in the lab dir) or etcd://127.0.0.1:PORT (keys under /<lab>).",
)
@click.option(
    "--mtu",
    type=int,
    default=1500,
    show_default=True,
    help="Underlay (uplink) MTU; pods get it, less 50 bytes with tunnel routing.",
)
@switch_option(
    "--kube-proxy-replacement",
    default=True,
    show_default=True,
    help="true: Services in eBPF (socket LB); false: kube-proxy's rules (--kube-proxy-mode).",
)
@click.option(
    "--kube-proxy-mode",
    type=click.Choice(["iptables", "nftables"]),
    default="iptables",
    show_default=True,
    help="With --kube-proxy-replacement false: iptables or nftables rules in each node.",
)
@switch_option(
    "--bpf-lb-sock",
    help="Socket LB in every agent (default: as --kube-proxy-replacement).",
)
@switch_option(
    "--enable-node-port",
    help="NodePort/LoadBalancer on the uplinks (default: as --kube-proxy-replacement).",
)
@switch_option(
    "--enable-external-ips",
    help="externalIPs on the uplinks (default: as --kube-proxy-replacement).",
)
@click.pass_context
def up_cmd(
    ctx: click.Context,
    name: str | None,
    nodes: int,
    routing: str,
    store: str,
    mtu: int,
    kube_proxy_replacement: bool,
    kube_proxy_mode: str,
    bpf_lb_sock: bool | None,
    enable_node_port: bool | None,
    enable_external_ips: bool | None,
) -> None:
    """Create the lab: underlay and world namespaces, nodes with agents and lab kubelets, a
    scheduler, store objects."""
    from pylium.lab.up import LabError, up

    require_root()
    lab = name or lab_name(ctx)
    try:
        rec = up(
            lab,
            nodes,
            mtu,
            progress=_progress,
            routing="tunnel" if routing == "tunnel" else "native",
            store=store,
            kube_proxy_mode=None
            if kube_proxy_replacement
            else ("nftables" if kube_proxy_mode == "nftables" else "iptables"),
            lb_switches=(bpf_lb_sock, enable_node_port, enable_external_ips),
        )
    except LabError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"lab {lab!r} is up with {len(rec.nodes)} node(s), {rec.routing} routing.")
    click.echo(f"  apply pods:  pylium --lab {lab} apply -f FILE")
    click.echo(f"  see them:    pylium --lab {lab} get pods -A -o wide")
    click.echo(f"  remove it:   pylium lab down --name {lab}")


@lab_group.command("down")
@click.option("--name", default=None, help="Lab name (default: --lab).")
@click.option("--force", is_flag=True, help="Also clean leftovers found by name (after a crash).")
@click.pass_context
def down_cmd(ctx: click.Context, name: str | None, force: bool) -> None:
    """Remove everything the lab made (namespaces, processes, cgroups, pins, files)."""
    from pylium.lab.down import LeftoversWithoutRecord, down

    require_root()
    lab = name or lab_name(ctx)
    try:
        found = down(lab, force=force, progress=_progress)
    except LeftoversWithoutRecord as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"lab {lab!r} removed." if found else f"no lab {lab!r}: nothing to remove.")


def _flows_line(flows: dict[str, Any] | None) -> str:
    """`seen N, lost 0` or the lost events by source, in red: a loss is never silent."""
    if flows is None:
        return "(observer not answering)"
    lost = {source: int(n) for source, n in (flows.get("lost_events") or {}).items() if int(n)}
    seen = f"seen {flows.get('seen_flows', 0)}"
    if not lost:
        return f"{seen}, lost 0"
    return f"{seen}, [red]lost {', '.join(f'{n} ({s})' for s, n in sorted(lost.items()))}[/red]"


@lab_group.command("status")
@click.option("--name", default=None, help="Lab name (default: --lab).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def status_cmd(ctx: click.Context, name: str | None, output: str) -> None:
    """The lab's routing, store, daemons and relay socket; each node: underlay IP, pod CIDR,
    agent health, kubelet, namespace, agent socket, Hubble and metrics addresses, CNI dirs."""
    from pylium.lab.status import status

    report = status(load_lab(ctx, name))
    if output == "json":
        click.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"lab [bold]{report['name']}[/bold]  store {report['store']}")
    console.print(
        f"routing {report['routing']}  pod MTU {report['mtu']} (uplink {report['uplinkMtu']})  "
        f"underlay {report['underlay']['cidr']}  world {report['world']['ip']}"
    )
    for what, d in report["daemons"].items():
        state = "running" if d["running"] else "[red]stopped[/red]"
        console.print(f"{what}: {state} (pid {d['pid']})")
    console.print(f"hubble relay socket {report['relay']['socket']}")
    console.print(f"hubble UI {report['ui'] or '(not listening yet)'}")
    for n in report["nodes"]:
        grid = Table.grid(padding=(0, 2))
        grid.add_row("node", f"[bold]{n['name']}[/bold]  (netns {n['netns']})")
        grid.add_row("underlay IP", n["underlayIP"])
        grid.add_row("pod CIDR", n["podCIDR"])
        health = n["health"]
        grid.add_row(
            "agent", f"[green]{health}[/green]" if health == "ok" else f"[red]{health}[/red]"
        )
        grid.add_row("kubelet", "running" if n["kubeletRunning"] else "[red]stopped[/red]")
        grid.add_row("agent socket", n["agentSocket"])
        grid.add_row("hubble", f"{n['hubbleSocket']}, {n['hubbleAddress']}")
        grid.add_row("metrics", n["metricsAddress"])
        grid.add_row("flows", _flows_line(n["flows"]))
        grid.add_row("CNI conf dir", n["cniConfDir"])
        grid.add_row("CNI bin dir", n["cniBinDir"])
        grid.add_row("cgroup", n["cgroup"])
        console.print(grid)


@lab_group.command("restart")
@click.argument("daemon", type=click.Choice(["agent", "kubelet"]))
@click.option("--name", default=None, help="Lab name (default: --lab).")
@click.option("--node", default=None, help="Node name (default: the lab's first node).")
@click.pass_context
def restart_cmd(ctx: click.Context, daemon: str, name: str | None, node: str | None) -> None:
    """Restart a node's agent or lab kubelet (pods keep running and keep their addresses)."""
    from pylium.lab.up import LabError, restart_agent, restart_kubelet

    rec = load_lab(ctx, name)
    try:
        target = rec.node(node) if node else rec.nodes[0]
    except KeyError as e:
        raise click.ClickException(str(e)) from None
    try:
        if daemon == "agent":
            pid = restart_agent(rec, target, progress=_progress)
        else:
            pid = restart_kubelet(rec, target)
    except LabError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{target.name}: {daemon} restarted (pid {pid})")


@lab_group.command("demo")
@click.option("--name", default="demo", show_default=True, help="The demo lab's name.")
def demo_cmd(name: str) -> None:
    """Replace the demo lab, start a few pods and show them talking."""
    from pylium.lab.demo import run_demo

    require_root()
    sys.exit(run_demo(name))
