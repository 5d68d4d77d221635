"""`pylium lab demo` (`make demo`): replace the demo lab, start a few pods, show them talking,
then say how to explore and how to tear it down."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.padding import Padding
from rich.panel import Panel

from pylium.api import validate
from pylium.cli.output import render_table
from pylium.cli.printers import columns_for
from pylium.lab.down import down
from pylium.lab.up import LabError, up
from pylium.store import Object, open_store

NAMESPACE = "demo"
RUNNING_TIMEOUT = 60.0


def _server(name: str) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "web"}},
        "spec": {
            "containers": [
                {
                    "name": "serve-hostname",
                    "image": "pylium/podserver",
                    "ports": [
                        {"containerPort": 80, "protocol": "TCP"},
                        {"containerPort": 53, "protocol": "UDP"},
                    ],
                }
            ]
        },
    }


def manifests() -> list[Object]:
    """The demo namespace and its pods: two servers and a client that just sleeps."""
    client: Object = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client", "namespace": NAMESPACE, "labels": {"app": "client"}},
        "spec": {
            "containers": [{"name": "client", "image": "busybox", "command": ["sleep", "infinity"]}]
        },
    }
    namespace: Object = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    return [validate(o) for o in (namespace, _server("web-1"), _server("web-2"), client)]


PROBES = [
    ("client", "web-1", 80, "tcp"),
    ("client", "web-2", 53, "udp"),
    ("web-1", "web-2", 80, "tcp"),
]


async def _apply_and_wait(store_url: str, objs: list[Object]) -> list[Object]:
    store = open_store(store_url)
    try:
        for obj in objs:
            await store.apply(obj)
        deadline = time.monotonic() + RUNNING_TIMEOUT
        while True:
            pods, _ = await store.list("Pod", NAMESPACE)
            ready = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
            if len(ready) == len(objs) - 1 and all(p["status"].get("podIP") for p in ready):
                return sorted(pods, key=lambda p: str(p["metadata"]["name"]))
            if time.monotonic() > deadline:
                raise LabError(
                    f"pods not Running after {RUNNING_TIMEOUT:.0f}s: {[_phase(p) for p in pods]}"
                )
            await asyncio.sleep(0.1)
    finally:
        await store.close()


def _phase(pod: Object) -> str:
    status = pod.get("status") or {}
    return f"{pod['metadata']['name']}={status.get('phase', 'Pending')} {status.get('message', '')}"


def _probe(lab: str, src: str, dest: str, port: int, protocol: str) -> dict[str, Any]:
    """Run `pylium probe` as a user would; returns its JSON answer."""
    pylium = str(Path(sys.executable).parent / "pylium")
    argv = [pylium, "--lab", lab, "probe", "-n", NAMESPACE, src, f"{dest}:{port}"]
    proc = subprocess.run(
        [*argv, "--protocol", protocol, "-o", "json"], capture_output=True, text=True
    )
    try:
        answer: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        answer = {"ok": False, "answer": None, "reason": proc.stderr.strip() or "probe failed"}
    return answer


def run_demo(lab: str = "demo") -> int:
    """The walkthrough; returns the exit code (non-zero if the lab failed or a probe did)."""
    console = Console()
    err = Console(stderr=True)

    def progress(message: str) -> None:
        err.print(f"  [dim]• {message}[/dim]")

    console.rule(f"[bold]pylium demo[/bold]: a one-node lab named {lab!r}")
    console.print("[bold]1.[/bold] Replace any earlier demo lab, then bring the lab up")
    down(lab, force=True, progress=progress)
    try:
        rec = up(lab, 1, progress=progress)
        node = rec.nodes[0]
        gateway = next(ipaddress.ip_network(node.podCIDR).hosts())
        console.print(f"   node [cyan]{node.name}[/cyan] (namespace {node.netns}): agent + kubelet")
        console.print(f"   pod CIDR {node.podCIDR}, gateway {gateway} on pylium_host")
        console.print("[bold]2.[/bold] Apply namespace [cyan]demo[/cyan] with three pods:")
        console.print(
            "   [cyan]web-1[/cyan], [cyan]web-2[/cyan]: built-in server on 80/TCP + 53/UDP, "
            "answers with its name"
        )
        console.print("   [cyan]client[/cyan]: command `sleep infinity`")
        pods = asyncio.run(_apply_and_wait(rec.store, manifests()))
    except LabError as e:
        err.print(f"[red]demo failed:[/red] {e}")
        return 1
    columns = columns_for("Pod", wide=False)
    rows = [[col.cell(pod) for col in columns] for pod in pods]
    console.print(f"   [dim]$ pylium --lab {lab} get pods -n {NAMESPACE}[/dim]")
    table = render_table([col.header for col in columns], rows)
    console.print(Padding(table, (0, 0, 0, 3)), highlight=False, markup=False)
    console.print("[bold]3.[/bold] Pods talk through pylium's eBPF programs on their veths")
    failures = 0
    for src, dest, port, protocol in PROBES:
        answer = _probe(lab, src, dest, port, protocol)
        shown = f"{src} → {dest}:{port}/{protocol}"
        if answer.get("ok"):
            console.print(
                f"   [green]✔[/green] {shown:<28} answered [bold]{answer['answer']}[/bold]"
            )
        else:
            failures += 1
            console.print(f"   [red]✘[/red] {shown:<28} {answer.get('reason')}")
    console.print(
        Panel(
            "\n".join(
                [
                    f"pylium --lab {lab} get pods -A -o wide",
                    f"pylium --lab {lab} probe -n demo client web-1:80",
                    f"pylium --lab {lab} probe -n demo client web-2:53 --protocol udp",
                    f"pylium --lab {lab} exec -n demo client -- ip addr",
                    f"pylium --lab {lab} lab status",
                    f"pylium lab down --name {lab}      # remove everything",
                ]
            ),
            title="explore (as root), then tear down",
            title_align="left",
        )
    )
    if failures:
        err.print(f"[red]{failures} probe(s) failed[/red]")
        return 1
    return 0
