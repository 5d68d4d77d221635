"""`pylium bench flows`: how many flow events the agent's observer decodes, enriches and serves
without loss, and what trace events cost the datapath.

Everything runs in this process on real BPF: from-container is loaded into a scratch pin
directory (`/sys/fs/bpf/pylium/bench-flows-<random>`, removed at the end) with two endpoints,
and BPF_PROG_TEST_RUN runs a UDP packet from one pod to the other `repeat` times per syscall
from a producer thread. With `monitor_aggregation` 0 each run writes one trace event into the
real `pylium_events` ring buffer, which the agent's `Observer` reads on the asyncio loop, turns
into an enriched flow (pod names from the endpoint list) and puts in its ring, while one
follower (a `pylium observe -f` client) takes every flow.

- Throughput: the producer runs at paced rates (bursts every 10 ms) that double until a run
  loses events, then twice at the middle of the remaining gap, and then at full speed.
  Produced = test runs (one event each); decoded = flows the observer made; lost = produced -
  decoded (the ring buffer was full: the datapath's `bpf_ringbuf_output` fails silently) plus
  decode errors; follower lost = flows the follower missed. The sustained rate is the highest
  paced rate with nothing lost.
- Overhead of flow export, on against off (`trace_events` 0 in node.h: no trace events at
  all), from-container's average run time (BPF_PROG_TEST_RUN `duration`), rounds interleaved,
  medians compared. Request/response: an established flow's packets, with Cilium's default
  aggregation (1: such packets report nothing) and with an event per packet (aggregation 0,
  consumed by the observer). Connection rate: the first packet of CONNECTIONS new UDP flows
  per round, each reported with export on.
- The same on against off for real traffic between two pods (`flows_pods`): request/response
  and connections per second, with the observer decoding; the goal is judged on these.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import statistics
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pylium.bench import flows_pods
from pylium.bench.flows_pods import PodReport
from pylium.bench.scratch import unique_name
from pylium.datapath.lxc import MAP_EVENTS, EndpointInfo, LxcObjects, NodeConfig
from pylium.datapath.testrun import prog_run
from pylium.endpoint.model import Endpoint as AgentEndpoint
from pylium.hubble.endpoints import EndpointsLookup
from pylium.hubble.observer import Observer, ObserverParams
from pylium.hubble.parser import FlowParser
from pylium.paths import BPFFS_ROOT

ROUTER_IP, POD_CIDR = "10.244.1.1", "10.244.1.0/24"
A_IP, B_IP = "10.244.1.10", "10.244.1.20"
A_MAC, A_NODE_MAC = "02:00:00:00:00:0a", "02:00:00:00:01:0a"
# BPF_PROG_TEST_RUN gives the skb ifindex 1: pod A "owns" it, so from-container sees A's packets.
A = EndpointInfo.make(ifindex=1, lxc_id=101, ip=A_IP, mac=A_MAC, node_mac=A_NODE_MAC)
B = EndpointInfo.make(
    ifindex=4242, lxc_id=102, ip=B_IP, mac="02:00:00:00:00:0b", node_mac="02:00:00:00:01:0b"
)
BURST_INTERVAL = 0.01
"""Paced runs write one burst of events every 10 ms."""
FIRST_RATE = 2_500
CONNECTIONS = 500
"""New connections per round of the connection-rate comparison."""
BISECT_STEPS = 2
"""Runs between the last lossless and the first lossy doubling."""
GOAL_RATE = 50_000
"""The issue's goal: flows/s per node without loss."""
GOAL_OVERHEAD = 0.05
"""The issue's goal: < 5% request/response overhead (judged on the two-pod figures)."""
POD_SECONDS = 10
"""Interleaved 1-second rounds per test of the two-pod measurement."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Run:
    """One producer run: `target` events/s (0: as fast as possible)."""

    target: int
    seconds: float
    produced: int
    decoded: int
    lost: int
    follower_lost: int

    @property
    def rate(self) -> float:
        """Decoded flows per second over the run."""
        return self.decoded / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Report:
    runs: list[Run]
    sustained: int
    """The highest paced rate with nothing lost (0: none)."""
    ns_events: float
    """from-container ns per packet with an event per packet (median of rounds)."""
    ns_aggregated: float
    """... with default aggregation (no event for the established flow)."""
    ns_off: float
    """... with flow export off (`trace_events` 0: no trace events at all)."""
    ns_connection_events: float
    """from-container ns for the first packet of a new connection (an event each)."""
    ns_connection_off: float
    """... with flow export off."""
    pods: PodReport
    """Two pods' request/response and connection rates, export on against off."""

    @property
    def overhead(self) -> float:
        """An event per packet against default aggregation."""
        return _ratio(self.ns_events, self.ns_aggregated)

    @property
    def rr_overhead(self) -> float:
        """Request/response (an established flow's packets): export on (default
        aggregation) against off."""
        return _ratio(self.ns_aggregated, self.ns_off)

    @property
    def connection_overhead(self) -> float:
        """Connection rate (a new connection's first packet): export on against off."""
        return _ratio(self.ns_connection_events, self.ns_connection_off)


def _ratio(on: float, off: float) -> float:
    return on / off - 1 if off else 0.0


def udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes = b"x" * 32) -> bytes:
    """Ethernet + IPv4 + UDP from pod A's MAC to its node side."""
    udp_len = 8 + len(payload)
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, 17, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
    )  # fmt: skip
    total = sum(struct.unpack("!10H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    header = header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:]
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    eth = bytes.fromhex(A_NODE_MAC.replace(":", "") + A_MAC.replace(":", "")) + b"\x08\x00"
    return eth + header + udp


PACKET = udp_frame(A_IP, B_IP, 5000, 53)


def _agent_endpoints() -> list[AgentEndpoint]:
    def one(ep_id: int, ip: str, pod: str, ifindex: int) -> AgentEndpoint:
        return AgentEndpoint(
            id=ep_id, container_id=f"c{ep_id}", ifname="eth0", netns=f"/var/run/netns/p{ep_id}",
            host_ifname=f"lxc{ep_id:011d}", state="ready", created_at="2025-11-26T09:40:00Z",
            mtu=1500, pod_name=pod, pod_namespace="bench", ipv4=ip, host_ifindex=ifindex,
        )  # fmt: skip

    return [one(101, A_IP, "client-1", 1), one(102, B_IP, "server-1", 4242)]


@contextmanager
def scratch_pin_dir() -> Iterator[Path]:
    """A scratch bpffs directory for the pinned events map (the observer opens the ring buffer
    by its pin), removed afterwards."""
    pin_dir = BPFFS_ROOT / unique_name("bench-flows-")
    pin_dir.mkdir(parents=True)
    try:
        yield pin_dir
    finally:
        shutil.rmtree(pin_dir, ignore_errors=True)


def bench_observer(
    pin_dir: Path, endpoints: list[AgentEndpoint], router_ip: str, pod_cidr: str
) -> Observer:
    """The agent's observer on the ring buffer pinned in `pin_dir`, enriching with `endpoints`."""
    lookup = EndpointsLookup(lambda: endpoints, router_ip=router_ip, pod_cidr=pod_cidr)
    return Observer(
        ObserverParams(events_pin=pin_dir / MAP_EVENTS), FlowParser(lookup, "bench-node")
    )


class _Bench:
    """The loaded programs, the observer and its follower."""

    def __init__(
        self, events: LxcObjects, aggregated: LxcObjects, off: LxcObjects, pin_dir: Path
    ) -> None:
        self.events, self.aggregated, self.off = events, aggregated, off
        self.observer = bench_observer(pin_dir, _agent_endpoints(), ROUTER_IP, POD_CIDR)

    async def follow(self) -> None:
        """A `pylium observe -f` client: takes every flow (its losses are the ring's)."""
        async for _ in self.observer.ring.follow():
            pass

    def produce(self, target: int, seconds: float, stop: threading.Event) -> int:
        """Run from-container (an event per run) for `seconds`; returns the runs."""
        prog = self.events.from_container
        burst = max(1, int(target * BURST_INTERVAL)) if target else 2000
        produced, start = 0, time.monotonic()
        next_burst = start
        while not stop.is_set() and time.monotonic() - start < seconds:
            prog_run(prog, PACKET, repeat=burst)
            produced += burst
            if target:
                next_burst += BURST_INTERVAL
                delay = next_burst - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        return produced

    async def run(self, target: int, seconds: float) -> Run:
        obs = self.observer
        seen0, errors0 = obs.ring.seen, obs.decode_errors
        lost0 = obs.ring.follower_lost
        stop = threading.Event()
        start = time.monotonic()
        try:
            produced = await asyncio.to_thread(self.produce, target, seconds, stop)
        finally:
            stop.set()
        # Drain: wait until the observer has caught up (nothing new for 200 ms).
        last, quiet_since = obs.ring.seen, time.monotonic()
        while time.monotonic() - quiet_since < 0.2:
            await asyncio.sleep(0.02)
            if obs.ring.seen != last:
                last, quiet_since = obs.ring.seen, time.monotonic()
        elapsed = quiet_since - start
        decoded = obs.ring.seen - seen0
        errors = obs.decode_errors - errors0
        return Run(
            target=target,
            seconds=elapsed,
            produced=produced,
            decoded=decoded,
            lost=produced - decoded + errors,
            follower_lost=obs.ring.follower_lost - lost0,
        )

    def per_packet_ns(self, objs: LxcObjects, repeat: int) -> int:
        return prog_run(objs.from_container, PACKET, repeat=repeat).duration_ns

    def per_connection_ns(self, objs: LxcObjects, first_port: int) -> float:
        """Mean run time of CONNECTIONS first packets, each of a new UDP flow (source ports
        from `first_port`): conntrack creates an entry and, with export on, reports it."""
        total = 0
        for port in range(first_port, first_port + CONNECTIONS):
            frame = udp_frame(A_IP, B_IP, port, 53)
            total += prog_run(objs.from_container, frame).duration_ns
        return total / CONNECTIONS


async def _bench(
    pin_dir: Path, seconds: float, rounds: int, max_rate: int, progress: Progress, pods: PodReport
) -> Report:
    events = LxcObjects.load(
        NodeConfig(router_ip=ROUTER_IP, pod_cidr=POD_CIDR, monitor_aggregation=0), pin_dir
    )
    with events:
        for ep in (A, B):
            events.add_endpoint(ep)
        # The aggregated build has its own (unpinned) maps; its events map is never read: an
        # established flow writes nothing there.
        aggregated = LxcObjects.load(NodeConfig(router_ip=ROUTER_IP, pod_cidr=POD_CIDR))
        off = LxcObjects.load(
            NodeConfig(router_ip=ROUTER_IP, pod_cidr=POD_CIDR, trace_events=False)
        )
        with aggregated, off:
            for ep in (A, B):
                aggregated.add_endpoint(ep)
                off.add_endpoint(ep)
            bench = _Bench(events, aggregated, off, pin_dir)
            await bench.observer.start()
            follower = asyncio.create_task(bench.follow())
            try:
                return await _measure(bench, seconds, rounds, max_rate, progress, pods)
            finally:
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
                await bench.observer.stop()


async def _measure(
    bench: _Bench, seconds: float, rounds: int, max_rate: int, progress: Progress, pods: PodReport
) -> Report:
    runs: list[Run] = []

    async def lossless(target: int) -> bool:
        run = await bench.run(target, seconds)
        runs.append(run)
        progress(f"paced {target}/s: {run.decoded}/{run.produced} decoded, {run.lost} lost")
        return not (run.lost or run.follower_lost)

    sustained, target = 0, FIRST_RATE
    while target <= max_rate:
        if not await lossless(target):
            break
        sustained, target = target, target * 2
    # Between the last lossless rate and the first lossy one, halve the gap a few times.
    lossy = target
    for _ in range(BISECT_STEPS if sustained and lossy <= max_rate else 0):
        middle = (sustained + lossy) // 2 // 1000 * 1000
        if middle <= sustained:
            break
        if await lossless(middle):
            sustained = middle
        else:
            lossy = middle
    run = await bench.run(0, seconds)
    runs.append(run)
    progress(f"full speed: {run.rate:.0f}/s decoded, {run.lost} of {run.produced} lost")
    with_events: list[float] = []
    aggregated: list[float] = []
    off: list[float] = []
    conn_events: list[float] = []
    conn_off: list[float] = []
    for objs in (bench.aggregated, bench.off):
        bench.per_packet_ns(objs, 1)  # the flow's conntrack entry, reported once
    for i in range(rounds):
        with_events.append(bench.per_packet_ns(bench.events, 20_000))
        aggregated.append(bench.per_packet_ns(bench.aggregated, 20_000))
        off.append(bench.per_packet_ns(bench.off, 20_000))
        # New source ports every round: each first packet is a new connection.
        first_port = 10_000 + i * CONNECTIONS
        conn_events.append(bench.per_connection_ns(bench.events, first_port))
        conn_off.append(bench.per_connection_ns(bench.off, first_port))
        await asyncio.sleep(0.05)  # let the observer drain the events of the round
    return Report(
        runs=runs,
        sustained=sustained,
        ns_events=statistics.median(with_events),
        ns_aggregated=statistics.median(aggregated),
        ns_off=statistics.median(off),
        ns_connection_events=statistics.median(conn_events),
        ns_connection_off=statistics.median(conn_off),
        pods=pods,
    )


def run_bench(
    seconds: float = 2.0,
    rounds: int = 9,
    max_rate: int = 1_600_000,
    progress: Progress = print,
    pod_seconds: int = POD_SECONDS,
) -> Report:
    """Measure between two pods in scratch namespaces (`pod_seconds` rounds per test), then
    in a scratch pin directory; both removed afterwards."""
    pods = flows_pods.run_bench(pod_seconds, progress)
    with scratch_pin_dir() as pin_dir:
        return asyncio.run(_bench(pin_dir, seconds, rounds, max_rate, progress, pods))


def render_text(report: Report) -> str:
    lines = [
        "flow events through the observer (from-container test runs -> ring buffer -> "
        "decoded, enriched flows -> one follower)",
        f"{'target/s':>10} {'produced':>10} {'decoded':>10} {'lost':>8} {'follower':>9} "
        f"{'decoded/s':>10}",
    ]
    for r in report.runs:
        target = str(r.target) if r.target else "max"
        lines.append(
            f"{target:>10} {r.produced:>10} {r.decoded:>10} {r.lost:>8} {r.follower_lost:>9} "
            f"{r.rate:>10.0f}"
        )
    goal = "meets" if report.sustained >= GOAL_RATE else "misses"
    lines.append(f"sustained without loss: {report.sustained}/s ({goal} the {GOAL_RATE}/s goal)")
    lines.append(
        f"request/response, from-container per packet: export off {report.ns_off:.0f} ns, "
        f"on (default aggregation) {report.ns_aggregated:.0f} ns: overhead "
        f"{report.rr_overhead:+.1%}; an event per "
        f"packet {report.ns_events:.0f} ns ({report.overhead:+.1%} against aggregation)"
    )
    lines.append(
        f"connection rate, first packet of a new connection: export off "
        f"{report.ns_connection_off:.0f} ns, on {report.ns_connection_events:.0f} ns: overhead "
        f"{report.connection_overhead:+.1%}"
    )
    lines.append(flows_pods.render_text(report.pods, GOAL_OVERHEAD))
    return "\n".join(lines)


def to_json(report: Report) -> dict[str, Any]:
    return {
        "runs": [asdict(r) | {"rate": r.rate} for r in report.runs],
        "sustained": report.sustained,
        "nsPerPacketEvents": report.ns_events,
        "nsPerPacketAggregated": report.ns_aggregated,
        "overhead": report.overhead,
        "nsPerPacketOff": report.ns_off,
        "requestResponseOverhead": report.rr_overhead,
        "nsPerConnectionEvents": report.ns_connection_events,
        "nsPerConnectionOff": report.ns_connection_off,
        "connectionOverhead": report.connection_overhead,
        "pods": flows_pods.to_json(report.pods),
    }
