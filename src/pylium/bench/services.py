"""`pylium bench services`: Services in eBPF (socket LB) against kube-proxy's iptables and
nftables modes, side by side, with 1 to 30 000 services of 2 backends each programmed.

For each size and mode, fresh namespaces: a client (`<prefix>-c`) with a veth to a node
(`<prefix>-n`) and another to a bare twin node (`<prefix>-b`). The node holds a listener on
0.0.0.0:8080 and treats the whole backend range as local (`local 10.200.0.0/16 dev lo`), so
every backend address answers; service k has ClusterIP 10.96.0.0+k+1 port 80 and backends
10.200.0.0+2k and +2k+1, port 8080. The bare node is the same with 10.201.0.0/16 and nothing
programmed: a connect() there is the handshake alone.

- **ebpf**: `ServiceTable` -> `LBMaps` -> `SockLB.apply`, sock.o on a bench cgroup the client
  process joins; connect() is translated before the first packet exists.
- **iptables** / **nftables**: the same `ServiceTable` states through kube-proxy's `Proxier`
  into the node namespace (`NetnsApplier`, iptables-legacy); the client's SYN is DNATed in the
  node's prerouting.

Measured per size and mode: the full sync (empty kernel state -> N services: encoding plus
iptables-restore / nft -f / map writes), the connect() latency to the service programmed last
(the last rule of KUBE-SERVICES) over fresh connections (p50, p99), the p50 of connects to
the same backend in the bare node taken in turn with them (so both see the same machine load;
the service's own cost is the difference), and the time to add one service and to remove it
again (incremental syncs; median of 3 cycles). The client is connect.c, compiled once per run,
the same for every mode: it times the syscall alone. The table's own bookkeeping (store
objects -> states) is outside every timing.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from pylium import paths
from pylium.bench.scratch import netns_add, netns_del, unique_name
from pylium.datapath.socklb import SockLB
from pylium.lab import cgroup
from pylium.loadbalancer.kubeproxy.applier import NetnsApplier
from pylium.loadbalancer.kubeproxy.params import ProxyParams
from pylium.loadbalancer.kubeproxy.proxier import Mode, Proxier
from pylium.loadbalancer.lbmaps import LBMaps, LBParams
from pylium.loadbalancer.model import ServiceName
from pylium.loadbalancer.servicetable import ServiceTable

PREFIX = "tv"
"""Names of one run: netns `pyl-tv<random>-{c,n}`, cgroup and pins `.../pylium/tv-<random>`."""
MODES = ("ebpf", "iptables", "nftables")
DEFAULT_SIZES = (1, 1000, 10000, 30000)
MAX_SIZE = 32000

"""Two backends per service must fit the 10.200.0.0/16 backend range."""
NODE = "bench-node"
CLUSTER_IP_BASE = IPv4Address("10.96.0.0")
BACKEND_BASE = IPv4Address("10.200.0.0")
BACKEND_RANGE = "10.200.0.0/16"
SERVICE_PORT, BACKEND_PORT = 80, 8080
CLIENT_IP, NODE_IP = "10.199.0.2", "10.199.0.1"
BARE_CLIENT_IP, BARE_NODE_IP = "10.198.0.2", "10.198.0.1"
BARE_BACKEND_BASE = IPv4Address("10.201.0.0")
BARE_BACKEND_RANGE = "10.201.0.0/16"
"""The bare node's copy of the backend range."""
CONNECTS, WARMUP = 1000, 100
LISTEN_BACKLOG = 4096
"""The listener never accepts: the kernel completes each handshake alone, and no server
wake-up lands on the client's CPU inside a timed connect() (with an accept loop, about half
the connects took twice as long). Each topology sees WARMUP + CONNECTS connects per listener,
well below this (and the netns' somaxconn, 4096)."""
REPEATS = 3
"""Add-then-remove cycles per size and mode (the median is reported)."""
LOAD_TIMEOUT = 900.0
"""Seconds one iptables-restore / nft -f may take (nft -f of 30 000 services: over a minute on
a loaded 2-core machine)."""
IPTABLES = "iptables-legacy"
"""iptables-nft's restore --noflush took over a minute at 10 000 services here; legacy loads
30 000 in seconds (NOTES.md)."""

Progress = Callable[[str], None]

SERVER = f"""
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {BACKEND_PORT})); s.listen({LISTEN_BACKLOG})
print("ready", flush=True)
time.sleep(1e9)
"""

CLIENT_SOURCE = Path(__file__).with_name("connect.c")
CC = "clang"
"""The compiler the BPF build needs anyway."""


def build_client(out_dir: Path) -> Path:
    """Compile connect.c into `out_dir`; returns the binary."""
    out = out_dir / "connect"
    subprocess.run(
        [CC, "-O2", "-Wall", "-Werror", "-o", str(out), str(CLIENT_SOURCE)],
        check=True,
        capture_output=True,
    )
    return out


@dataclass(frozen=True)
class Result:
    """One mode at one size; times in milliseconds."""

    mode: str
    services: int
    full_sync_ms: float
    connect_p50_ms: float
    connect_p99_ms: float
    direct_p50_ms: float
    """A connect() to the same backend address in the bare twin node: the handshake alone."""
    add_ms: float
    remove_ms: float


def service_objects(k: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Service k and its EndpointSlice (2 ready backends)."""
    name = f"svc-{k}"
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": str(CLUSTER_IP_BASE + k + 1),
            "ports": [{"name": "http", "port": SERVICE_PORT, "protocol": "TCP"}],
        },
    }
    endpoints = [
        {"addresses": [str(BACKEND_BASE + 2 * k + j)], "conditions": {"ready": True}}
        for j in (0, 1)
    ]
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-x",
            "namespace": "bench",
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": BACKEND_PORT, "protocol": "TCP"}],
    }
    return service, slice_


def build_table(size: int) -> ServiceTable:
    """A table holding services 0..size-1."""
    table = ServiceTable()
    for k in range(size):
        service, slice_ = service_objects(k)
        table.upsert_service(service)
        table.upsert_slice(slice_)
    return table


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class Topology:
    """A client namespace with two veths: to a node namespace (where the services are
    programmed) and to a twin "bare" node that nothing is programmed in. Both nodes treat
    their backend range as local and run the same listener."""

    def __init__(self, base: str, client_bin: Path) -> None:
        self.client, self.node, self.bare = f"{base}-c", f"{base}-n", f"{base}-b"
        self.client_bin = client_bin
        self._servers: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Topology:
        try:
            for ns in (self.client, self.node, self.bare):
                netns_add(ns)
            for dev, node, (client_ip, node_ip), backends in (
                ("eth0", self.node, (CLIENT_IP, NODE_IP), BACKEND_RANGE),
                ("eth1", self.bare, (BARE_CLIENT_IP, BARE_NODE_IP), BARE_BACKEND_RANGE),
            ):
                for argv in (
                    ["ip", "link", "add", dev, "netns", self.client, "type", "veth", "peer",
                     "name", "eth0", "netns", node],
                    ["ip", "-n", self.client, "addr", "add", f"{client_ip}/24", "dev", dev],
                    ["ip", "-n", node, "addr", "add", f"{node_ip}/24", "dev", "eth0"],
                    ["ip", "-n", self.client, "link", "set", dev, "up"],
                    ["ip", "-n", node, "link", "set", "eth0", "up"],
                    ["ip", "-n", node, "route", "add", "local", backends, "dev", "lo"],
                ):  # fmt: skip
                    subprocess.run(argv, check=True, capture_output=True)
                self._serve(node)
            for argv in (
                ["ip", "-n", self.client, "route", "add", BARE_BACKEND_RANGE, "via", BARE_NODE_IP],
                ["ip", "-n", self.client, "route", "add", "default", "via", NODE_IP],
            ):
                subprocess.run(argv, check=True, capture_output=True)
        except BaseException:
            self.close()
            raise
        return self

    def _serve(self, ns: str) -> None:
        server = subprocess.Popen(
            [*self.enter(ns), sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True
        )
        self._servers.append(server)
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("the bench listener did not start")

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def enter(ns: str) -> list[str]:
        """The prefix running a command in namespace `ns`."""
        return ["nsenter", f"--net={paths.NETNS_DIR / ns}", "--"]

    def connect_times(self, target: int, cgroup_dir: Path) -> tuple[list[float], list[float]]:
        """Milliseconds of CONNECTS fresh connect() calls from the client (run in
        `cgroup_dir`) to service `target`'s ClusterIP, and of as many to the same backend
        address in the bare node, taken in turn."""
        service = f"{CLUSTER_IP_BASE + target + 1}:{SERVICE_PORT}"
        direct = f"{BARE_BACKEND_BASE + 2 * target}:{BACKEND_PORT}"
        argv = [*self.enter(self.client), str(self.client_bin), str(CONNECTS), str(WARMUP)]
        proc = subprocess.run(
            [*argv, service, direct],
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=lambda: cgroup.add_pid(cgroup_dir, 0),  # 0: the writing process
        )
        if proc.returncode != 0:
            raise RuntimeError(f"bench client failed: {proc.stderr.strip()}")
        via_service, via_bare = ([ns / 1e6 for ns in times] for times in json.loads(proc.stdout))
        return via_service, via_bare

    def close(self) -> None:
        """Stop the listeners and delete the namespaces (idempotent)."""
        for server in self._servers:
            server.kill()
            server.wait()
            if server.stdout is not None:
                server.stdout.close()
        self._servers = []
        for ns in (self.client, self.node, self.bare):
            netns_del(ns)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def bench_ebpf(size: int, topo: Topology, target: int, pin_dir: Path, cg: Path) -> Result:
    """Socket LB: maps filled from the table, sock.o on `cg`."""
    table = build_table(size)
    maps = LBMaps(LBParams(NODE))
    # one entry per frontend plus one per slot, with room for the added service
    sock = SockLB.load(pin_dir, cg, services_max=max(65536, 3 * (size + 1)))
    try:
        start = time.perf_counter()
        sock.apply(maps.sync(table.take_changes()))
        full = _ms(start)
        times, direct = topo.connect_times(target, cg)
        adds, removes = [], []
        for k in range(size, size + REPEATS):
            service, slice_ = service_objects(k)
            table.upsert_service(service)
            table.upsert_slice(slice_)
            start = time.perf_counter()
            sock.apply(maps.sync(table.take_changes()))
            adds.append(_ms(start))
            table.delete_service(service)
            table.delete_slice(slice_)
            start = time.perf_counter()
            sock.apply(maps.sync(table.take_changes()))
            removes.append(_ms(start))
    finally:
        sock.detach()
        sock.close()
        shutil.rmtree(pin_dir, ignore_errors=True)
    return _result("ebpf", size, full, times, direct, adds, removes)


def bench_kube_proxy(mode: Mode, size: int, topo: Topology, target: int, cg: Path) -> Result:
    """kube-proxy's rules in the node namespace."""
    table = build_table(size)
    applier = NetnsApplier(paths.NETNS_DIR / topo.node, IPTABLES, timeout=LOAD_TIMEOUT)
    proxier = Proxier(mode, ProxyParams(NODE), applier)
    states = table.states()
    start = time.perf_counter()
    proxier.sync_states(states, set())
    full = _ms(start)
    times, direct = topo.connect_times(target, cg)
    adds, removes = [], []
    for k in range(size, size + REPEATS):
        service, slice_ = service_objects(k)
        name = ServiceName("bench", f"svc-{k}")
        table.upsert_service(service)
        table.upsert_slice(slice_)
        start = time.perf_counter()
        proxier.sync_states(table.states(), {name})
        adds.append(_ms(start))
        table.delete_service(service)
        table.delete_slice(slice_)
        start = time.perf_counter()
        proxier.sync_states(table.states(), {name})
        removes.append(_ms(start))
    return _result(str(mode), size, full, times, direct, adds, removes)


def _result(
    mode: str,
    size: int,
    full: float,
    times: list[float],
    direct: list[float],
    adds: list[float],
    removes: list[float],
) -> Result:
    return Result(
        mode=mode,
        services=size,
        full_sync_ms=round(full, 3),
        connect_p50_ms=round(statistics.median(times), 4),
        connect_p99_ms=round(percentile(times, 0.99), 4),
        direct_p50_ms=round(statistics.median(direct), 4),
        add_ms=round(statistics.median(adds), 3),
        remove_ms=round(statistics.median(removes), 3),
    )


def last_rule_service(size: int) -> int:
    """The service whose KUBE-SERVICES rule comes last (the most rules to walk past)."""
    text = Proxier(Mode.IPTABLES, ProxyParams(NODE), _Discard()).sync_states(
        build_table(size).states(), set()
    )
    rules = text.splitlines()
    last = [r for r in rules if r.startswith("-A KUBE-SERVICES ") and " -d " in r][-1]
    match = re.search(r" -d (\S+?)(/32)? ", last)
    if match is None:
        raise RuntimeError(f"no destination in {last!r}")
    ip = IPv4Address(match.group(1))
    return int(ip) - int(CLUSTER_IP_BASE) - 1


class _Discard:
    """An applier that loads nothing (to read the generated order)."""

    def apply(self, mode: Mode, text: str) -> None:
        del mode, text


@contextmanager
def bench_cgroup(run: str) -> Iterator[Path]:
    """The client's cgroup `.../pylium/tv-<random>` (never the root), removed afterwards."""
    path = paths.CGROUP_ROOT / run
    cgroup.create(path)
    try:
        yield path
    finally:
        cgroup.remove(path)


def run_bench(
    sizes: list[int], progress: Progress, modes: tuple[str, ...] = MODES, run: str | None = None
) -> list[Result]:
    """Every mode at every size; namespaces, cgroup and pins are removed afterwards. `run`
    names them (default `tv-<random>`)."""
    run = run or unique_name(f"{PREFIX}-")
    pin_root = paths.BPFFS_ROOT / run
    results: list[Result] = []
    try:
        with bench_cgroup(run) as cg, tempfile.TemporaryDirectory(prefix=run) as tmp:
            client_bin = build_client(Path(tmp))
            for size in sizes:
                if not 1 <= size <= MAX_SIZE:
                    raise ValueError(f"size {size}: 1 to {MAX_SIZE} services")
                target = last_rule_service(size)
                for mode in modes:
                    progress(f"{size} services: {mode}")
                    with Topology(f"pyl-{run.replace('-', '')}", client_bin) as topo:
                        if mode == "ebpf":
                            result = bench_ebpf(size, topo, target, pin_root / str(size), cg)
                        else:
                            result = bench_kube_proxy(Mode(mode), size, topo, target, cg)
                    progress(f"  {_row(result)}")
                    results.append(result)
    finally:
        shutil.rmtree(pin_root, ignore_errors=True)
        with contextlib.suppress(OSError):
            paths.BPFFS_ROOT.rmdir()  # the shared parent, only when empty
    return results


def _row(r: Result) -> str:
    return (
        f"{r.mode:<9} {r.services:>6} {r.connect_p50_ms:>9.3f} {r.connect_p99_ms:>9.3f}"
        f" {r.direct_p50_ms:>9.3f} {_cost_us(r):>8.1f}"
        f" {r.add_ms:>9.2f} {r.remove_ms:>9.2f} {r.full_sync_ms:>11.1f}"
    )


def _cost_us(r: Result) -> float:
    """What the service adds to a connect(): p50 over the direct p50, in microseconds."""
    return (r.connect_p50_ms - r.direct_p50_ms) * 1000


def render_text(results: list[Result]) -> str:
    """The table, then the eBPF/iptables ratios and eBPF's flatness."""
    lines = [
        "connect() to the last service: p50/p99 over "
        f"{CONNECTS} fresh connections (ms); direct: p50 to a bare twin backend, taken in turn"
        " (ms); cost:"
        " p50 - direct (us); add/remove one service; full sync (ms)",
        f"{'mode':<9} {'svcs':>6} {'p50':>9} {'p99':>9} {'direct':>9} {'cost':>8}"
        f" {'add':>9} {'remove':>9} {'full sync':>11}",
    ]
    lines += [_row(r) for r in results]
    by = {(r.mode, r.services): r for r in results}
    sizes = sorted({r.services for r in results})
    lines.append("")
    lines.append("iptables / ebpf (x faster):  size  p50    p99    cost   add    full sync")
    for n in sizes:
        e, i = by.get(("ebpf", n)), by.get(("iptables", n))
        if e is None or i is None:
            continue
        lines.append(
            f"{'':29}{n:>5} {_ratio(i.connect_p50_ms, e.connect_p50_ms)}"
            f" {_ratio(i.connect_p99_ms, e.connect_p99_ms)} {_ratio(_cost_us(i), _cost_us(e))}"
            f" {_ratio(i.add_ms, e.add_ms)}"
            f" {_ratio(i.full_sync_ms, e.full_sync_ms)}"
        )
    ebpf = [by[("ebpf", n)] for n in sizes if ("ebpf", n) in by]
    if len(ebpf) > 1:
        change = (ebpf[-1].connect_p50_ms / ebpf[0].connect_p50_ms - 1) * 100
        lines.append(
            f"ebpf p50 from {ebpf[0].services} to {ebpf[-1].services} services: {change:+.1f}%"
        )
    return "\n".join(lines)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:>6.1f}" if b > 0 else "     -"


def to_json(results: list[Result]) -> dict[str, Any]:
    """The results as a JSON document."""
    return {"connects": CONNECTS, "results": [asdict(r) for r in results]}
