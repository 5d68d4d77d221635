"""`pylium bench cni`: ADD/DEL latency and pods per second, pylium-cni against bridge+host-local.

Both contenders run in one scratch node netns (a real agent for pylium), driven the way a
runtime drives them (`CniRuntime`): N sequential ADDs, then N DELs, alternating between the
contenders call by call so both see the same machine load. Timing happens in a worker
process started inside the node netns (`python -m pylium.bench.cni SPEC_JSON`, samples
written to a file in the work dir) because the reference bridge plugin builds its bridge in
the netns it runs in. Progress goes to stderr; nothing is left behind.

pylium's agent deletes a DEL'd veth pair in the background (its RCU waits hold the RTNL lock
for a while); before the next timed call the worker waits, untimed, until that interface is
gone, so neither contender's numbers carry the other's leftover kernel work.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pylium.bench.scratch import ScratchNode, netns_add, netns_del
from pylium.cni.runtime import Attachment, CniRuntime, NetworkList, Result

REFERENCE_PLUGINS = Path("/usr/lib/cni")
PYLIUM_POD_CIDR = "10.250.0.0/20"
REFERENCE_SUBNET = "10.251.0.0/20"
MAX_COUNT = 4000  # both pools are /20s
NETNS_PREFIX = "pyl-bench-"
CONTENDERS = ("pylium", "reference")
SAMPLES_FILE = "samples.json"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Summary:
    """One contender's numbers (milliseconds; pods/s = sequential ADDs per second)."""

    add_p50_ms: float
    add_p99_ms: float
    del_p50_ms: float
    del_p99_ms: float
    pods_per_s: float


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample list."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(add: list[float], delete: list[float]) -> Summary:
    """Latency percentiles and ADD throughput from per-call durations in seconds."""
    return Summary(
        add_p50_ms=percentile(add, 50) * 1000,
        add_p99_ms=percentile(add, 99) * 1000,
        del_p50_ms=percentile(delete, 50) * 1000,
        del_p99_ms=percentile(delete, 99) * 1000,
        pods_per_s=len(add) / sum(add),
    )


def run_bench(count: int, progress: Progress) -> dict[str, Summary]:
    """Set up a scratch node, measure both contenders, clean up; returns their summaries."""
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count must be in 1..{MAX_COUNT}")
    with tempfile.TemporaryDirectory(prefix="pylium-bench-") as tmp:
        workdir = Path(tmp)
        progress("starting a scratch node with pylium-agent")
        with ScratchNode(NETNS_PREFIX, workdir / "node", PYLIUM_POD_CIDR) as node:
            spec = {"workdir": str(workdir), "count": count, "socket": str(node.socket)}
            spec["netns_prefix"] = node.netns + "-p"
            command = [sys.executable, "-m", "pylium.bench.cni", json.dumps(spec)]
            with subprocess.Popen(
                [*node.exec_prefix(), *command], stderr=subprocess.PIPE, text=True
            ) as worker:
                for line in worker.stderr or ():  # the worker's progress, as it comes
                    progress(line.rstrip("\n"))
            if worker.returncode != 0:
                raise RuntimeError(f"benchmark worker failed with exit code {worker.returncode}")
        samples = json.loads((workdir / SAMPLES_FILE).read_text())
    return {name: summarize(samples[name]["add"], samples[name]["del"]) for name in CONTENDERS}


def render_text(count: int, summaries: dict[str, Summary]) -> str:
    """The side-by-side table with ratio = pylium / reference."""
    ours, ref = summaries["pylium"], summaries["reference"]
    lines = [
        f"pylium bench cni: {count} pods, sequential ADD then DEL, one run",
        f"{'':16}{'pylium-cni':>12}{'bridge+host-local':>20}{'ratio':>8}",
    ]
    rows = [
        ("ADD p50 (ms)", ours.add_p50_ms, ref.add_p50_ms),
        ("ADD p99 (ms)", ours.add_p99_ms, ref.add_p99_ms),
        ("DEL p50 (ms)", ours.del_p50_ms, ref.del_p50_ms),
        ("DEL p99 (ms)", ours.del_p99_ms, ref.del_p99_ms),
        ("pods/s (ADD)", ours.pods_per_s, ref.pods_per_s),
    ]
    for label, a, b in rows:
        lines.append(f"{label:16}{a:12.1f}{b:20.1f}{a / b:8.2f}")
    lines.append("ratio = pylium-cni / bridge+host-local (latency: lower is better)")
    return "\n".join(lines)


def to_json(count: int, summaries: dict[str, Summary]) -> dict[str, Any]:
    """Stable machine-readable output."""
    out: dict[str, Any] = {"count": count}
    out.update({name: asdict(s) for name, s in summaries.items()})
    ours, ref = summaries["pylium"], summaries["reference"]
    out["ratio"] = {k: getattr(ours, k) / getattr(ref, k) for k in asdict(ours)}
    return out


def _networks(workdir: Path, socket: str) -> dict[str, tuple[NetworkList, CniRuntime]]:
    pylium = NetworkList(
        "bench-pylium",
        "1.0.0",
        [{"type": "pylium-cni", "agentSocket": socket}],
    )
    reference = NetworkList(
        "bench-reference",
        "1.0.0",
        [
            {
                "type": "bridge",
                "bridge": "pylbench0",
                "isGateway": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": REFERENCE_SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(workdir / "host-local"),
                },
            }
        ],
    )
    return {
        "pylium": (pylium, CniRuntime([Path(sys.executable).parent])),
        "reference": (reference, CniRuntime([REFERENCE_PLUGINS])),
    }


def _measure(spec: dict[str, Any], progress: Progress) -> dict[str, dict[str, list[float]]]:
    """The worker: runs inside the node netns, returns per-call durations per contender.

    Calls alternate between the contenders (pod i: pylium, then reference) so both see the
    same machine load; each contender has its own pod namespaces.
    """
    count = int(spec["count"])
    nets = _networks(Path(spec["workdir"]), spec["socket"])
    names = {c: [f"{spec['netns_prefix']}{c[0]}{i}" for i in range(count)] for c in nets}
    samples: dict[str, dict[str, list[float]]] = {c: {"add": [], "del": []} for c in nets}
    try:
        progress(f"creating {len(nets) * count} pod namespaces")
        atts = {
            c: [Attachment(f"bench-{c}-{i}", netns_add(n)) for i, n in enumerate(names[c])]
            for c in nets
        }
        results: dict[str, list[Result]] = {c: [] for c in nets}
        for i in range(count):
            for c, (net, runtime) in nets.items():
                start = time.perf_counter()
                results[c].append(runtime.add(net, atts[c][i]))
                samples[c]["add"].append(time.perf_counter() - start)
            _tick(progress, "ADD", i, count)
        for i in range(count):
            for c, (net, runtime) in nets.items():
                start = time.perf_counter()
                runtime.delete(net, atts[c][i], results[c][i])
                samples[c]["del"].append(time.perf_counter() - start)
                if c == "pylium":  # its first interface is the host-side veth
                    _wait_gone(results[c][i]["interfaces"][0]["name"])
            _tick(progress, "DEL", i, count)
    finally:
        for name in (n for group in names.values() for n in group):
            netns_del(name)
    return samples


def _wait_gone(ifname: str, timeout: float = 10.0) -> None:
    """Wait until the node netns has no interface `ifname` (the worker runs in it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.if_nametoindex(ifname)
        except OSError:
            return
        time.sleep(0.001)
    raise RuntimeError(f"{ifname} still exists {timeout} s after DEL")


def _tick(progress: Progress, op: str, i: int, count: int) -> None:
    if (i + 1) % max(1, count // 4) == 0 or i + 1 == count:
        progress(f"{op} {i + 1}/{count} per plugin")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _worker_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    samples = _measure(spec, _stderr)
    (Path(spec["workdir"]) / SAMPLES_FILE).write_text(json.dumps(samples))


if __name__ == "__main__":
    _worker_main(sys.argv[1])
