"""The worker of `pylium bench datapath`, run inside the scratch node namespace.

    python -m pylium.bench.datapath_worker SPEC_JSON     (prints the report as JSON)

SPEC_JSON names the namespaces (`netns`: node, a, b paths) and the number of `rounds`. The
worker plumbs both topologies, loads the endpoint programs without pins (nothing stays in
bpffs) and attaches them, unpinned, only for the pylium slices; the servers in pod b are
killed by pid at the end. Progress goes to stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pylium.bench import progstats, traffic
from pylium.bench.datapath import PROGRAMS, SLICE_SECONDS, TESTS, TOPOLOGIES, Progress
from pylium.datapath.events import Direction, DropReason
from pylium.datapath.links import Direction as Hook
from pylium.datapath.links import attach_tcx
from pylium.datapath.lxc import EndpointInfo, LxcObjects, NodeConfig
from pylium.datapath.metrics import read_metrics
from pylium.datapath.netlink import PyrouteNetlink, Route
from pylium.endpoint.model import Endpoint, host_ifname
from pylium.endpoint.plumbing import Plumbed, plumb, route

ROUTER_IP = "10.252.0.1"
POD_CIDR = "10.252.0.0/24"
POD_IPS = ("10.252.0.10", "10.252.0.20")
"""Pods a and b on the routed veths (topologies A and C)."""
BARE_IPS = ("10.253.0.10", "10.253.0.20")
"""Pods a and b on the bare veth pair (topology B)."""
POD_IFNAME = "eth0"
BARE_IFNAME = "bare0"
MTU = 1500
IPERF_PORT = 5201
TRAFFIC_PORT = 7001

Attached = list[tuple[Endpoint, Plumbed]]


@dataclass(frozen=True)
class Sample:
    """What one slice moved: `amount` (Gbit, transactions or connections) in `seconds`."""

    amount: float
    seconds: float
    retransmits: int = 0

    @property
    def rate(self) -> float:
        return self.amount / self.seconds


def _nsenter(netns: str) -> list[str]:
    return ["nsenter", f"--net={netns}", "--"]


def _run_json(argv: list[str]) -> Any:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
    return json.loads(done.stdout)


def run_test(test: str, client: str, server_ip: str) -> Sample:
    """One slice of a test, from the client namespace to `server_ip`."""
    if test == "throughput_gbps":
        cmd = ["iperf3", "-c", server_ip, "-p", str(IPERF_PORT), "-t", str(SLICE_SECONDS), "-J"]
        end = _run_json([*_nsenter(client), *cmd])["end"]
        received = end["sum_received"]
        return Sample(
            amount=received["bytes"] * 8 / 1e9,
            seconds=received["seconds"],
            retransmits=int(end["sum_sent"]["retransmits"]),
        )
    mode = {"rr_per_s": "rr", "conn_per_s": "crr"}[test]
    cmd = [sys.executable, "-I", traffic.__file__, mode, server_ip, str(TRAFFIC_PORT)]
    result = _run_json([*_nsenter(client), *cmd, str(SLICE_SECONDS)])
    return Sample(amount=float(result["count"]), seconds=float(result["seconds"]))


def _listening(netns: str, port: int) -> bool:
    done = subprocess.run(
        [*_nsenter(netns), "ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True
    )
    return bool(done.stdout.strip())


@contextmanager
def servers(netns: str) -> Iterator[None]:
    """iperf3 and the traffic server in the server pod (all addresses), killed by pid after."""
    procs: list[subprocess.Popen[str]] = []
    try:
        iperf = [*_nsenter(netns), "iperf3", "-s", "-p", str(IPERF_PORT)]
        procs.append(subprocess.Popen(iperf, stdout=subprocess.DEVNULL, text=True))
        server = [sys.executable, "-I", traffic.__file__, "server", str(TRAFFIC_PORT)]
        procs.append(
            subprocess.Popen([*_nsenter(netns), *server], stdout=subprocess.PIPE, text=True)
        )
        stdout = procs[-1].stdout
        if stdout is None or stdout.readline().strip() != "ready":
            raise RuntimeError("the traffic server did not start")
        deadline = time.monotonic() + 10
        while not _listening(netns, IPERF_PORT):
            if procs[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the iperf3 server did not start")
            time.sleep(0.05)
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


async def plumb_routed(nl: PyrouteNetlink, netns: dict[str, str]) -> Attached:
    """Node and pods as the agent plumbs them: pylium_host with the router IP, a veth each."""
    await nl.setup_node(ROUTER_IP)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    plumbed = []
    for i, (role, ip) in enumerate(zip(("a", "b"), POD_IPS, strict=True), start=1):
        container_id = f"bench-{role}"
        ep = Endpoint(
            id=i,
            container_id=container_id,
            ifname=POD_IFNAME,
            netns=netns[role],
            host_ifname=host_ifname(container_id, POD_IFNAME),
            state="ready",
            created_at=created,
            mtu=MTU,
            ipv4=ip,
            gateway=ROUTER_IP,
        )
        plumbed.append((ep, await plumb(nl, ep, None, lambda step: None)))
        await route(nl, ep, lambda step: None)  # the bench attaches no policy: order is moot
    return plumbed


async def plumb_bare(nl: PyrouteNetlink, netns: dict[str, str]) -> None:
    """One veth pair straight between the pods, each end with a /32 and an on-link route to
    the other (more specific than the default route, so B's addresses take this path)."""
    async with nl.netns(netns["a"]) as a, nl.netns(netns["b"]) as b:
        await a.add_veth(BARE_IFNAME, BARE_IFNAME, MTU, peer_netns=netns["b"])
        for pod, ip, peer in ((a, BARE_IPS[0], BARE_IPS[1]), (b, BARE_IPS[1], BARE_IPS[0])):
            await pod.set_link(BARE_IFNAME, up=True)
            await pod.add_address(BARE_IFNAME, f"{ip}/32")
            await pod.add_route(Route(f"{peer}/32", BARE_IFNAME, scope="link"))


@contextmanager
def attached(objs: LxcObjects, endpoints: Attached) -> Iterator[None]:
    """Both programs on both host-side veths, as the agent attaches them; detached after."""
    with ExitStack() as links:
        for _, done in endpoints:
            ifindex = done.host_ifindex
            links.enter_context(attach_tcx(ifindex, objs.from_container, Hook.INGRESS))
            links.enter_context(attach_tcx(ifindex, objs.to_container, Hook.EGRESS))
        yield


def rotated(round_index: int, order: tuple[str, ...] = TOPOLOGIES) -> tuple[str, ...]:
    """`order` rotated for this round: each member goes first, second, ... in turn."""
    k = round_index % len(order)
    return order[k:] + order[:k]


def add_endpoints(objs: LxcObjects, endpoints: Attached) -> None:
    """Both pods in the programs' endpoint maps, as the agent adds them."""
    for ep, done in endpoints:
        objs.add_endpoint(
            EndpointInfo.make(
                ifindex=done.host_ifindex,
                lxc_id=ep.id,
                ip=ep.ipv4,
                mac=done.mac,
                node_mac=done.host_mac,
            )
        )


def total_rate(samples: list[Sample]) -> float:
    """The rate over all slices: their amounts over their seconds."""
    return sum(s.amount for s in samples) / sum(s.seconds for s in samples)


class Worker:
    """Plumbs the topologies and runs the interleaved slices."""

    def __init__(self, netns: dict[str, str], rounds: int, progress: Progress) -> None:
        self.netns = netns
        self.rounds = rounds
        self.progress = progress
        self.samples: dict[str, dict[str, list[Sample]]] = {
            t: {test: [] for test in TESTS} for t in TOPOLOGIES
        }
        self.stats = {p: {test: progstats.RunStats(0, 0) for test in TESTS} for p in PROGRAMS}

    async def run(self) -> dict[str, Any]:
        nl = PyrouteNetlink()
        await nl.start()
        try:
            self.progress("plumbing: node with pylium_host, pods a and b as the agent does")
            endpoints = await plumb_routed(nl, self.netns)
            self.progress("plumbing: a bare veth pair between pods a and b")
            await plumb_bare(nl, self.netns)
        finally:
            await nl.stop()
        config = NodeConfig(router_ip=ROUTER_IP, pod_cidr=POD_CIDR)
        with LxcObjects.load(config) as objs, servers(self.netns["b"]):
            add_endpoints(objs, endpoints)
            for test in TESTS:
                for r in range(self.rounds):
                    self.progress(f"{test}: round {r + 1}/{self.rounds}")
                    for topology in rotated(r):
                        sample = await self._slice(test, topology, objs, endpoints)
                        self.samples[topology][test].append(sample)
            counters = read_metrics(objs.metrics)
        forwarded = {}
        for direction in (Direction.EGRESS, Direction.INGRESS):
            counter = counters.get((DropReason.FORWARDED, direction))
            forwarded[direction.name.lower()] = counter.packets if counter else 0
        return self._result(forwarded)

    async def _slice(
        self, test: str, topology: str, objs: LxcObjects, endpoints: Attached
    ) -> Sample:
        server = BARE_IPS[1] if topology == "bare_veth" else POD_IPS[1]
        if topology != "pylium":
            return await asyncio.to_thread(run_test, test, self.netns["a"], server)
        programs = {"from_container": objs.from_container, "to_container": objs.to_container}
        with attached(objs, endpoints), progstats.run_time_stats():
            before = {name: progstats.read(p) for name, p in programs.items()}
            sample = await asyncio.to_thread(run_test, test, self.netns["a"], server)
            for name, p in programs.items():
                self.stats[name][test] += progstats.read(p) - before[name]
        return sample

    def _result(self, forwarded: dict[str, int]) -> dict[str, Any]:
        figures = {}
        for topology, by_test in self.samples.items():
            totals = {test: total_rate(samples) for test, samples in by_test.items()}
            figures[topology] = {
                **totals,
                "retransmits": sum(s.retransmits for s in by_test["throughput_gbps"]),
                "slices": {test: [s.rate for s in samples] for test, samples in by_test.items()},
            }
        costs = {
            p: {t: {"runs": s.runs, "ns_per_run": s.ns_per_run} for t, s in by.items()}
            for p, by in self.stats.items()
        }
        return {"rounds": self.rounds, "figures": figures, "costs": costs, "forwarded": forwarded}


def require_node_netns(spec: dict[str, Any]) -> None:
    """Exit unless this process runs inside the spec's node namespace."""
    # The netlink adapter changes the namespace it runs in (sysctls, devices): make sure that
    # is the scratch node namespace and not the machine's.
    here, node = os.stat("/proc/self/ns/net"), os.stat(spec["netns"]["node"])
    if (here.st_dev, here.st_ino) != (node.st_dev, node.st_ino):
        raise SystemExit("a bench worker must run inside its node namespace")


def progress_to_stderr(line: str) -> None:
    """Progress lines of a worker: its stderr, which the parent passes on."""
    print(line, file=sys.stderr, flush=True)


def main(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the worker for `spec`; refuses to run outside the spec's node namespace."""
    require_node_netns(spec)
    return asyncio.run(Worker(spec["netns"], int(spec["rounds"]), progress_to_stderr).run())


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
