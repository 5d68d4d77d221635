"""The worker of the two-pod part of `pylium bench flows`, run inside the scratch node
namespace.

    python -m pylium.bench.flows_pods_worker SPEC_JSON     (prints the result as JSON)

SPEC_JSON names the namespaces (`netns`: node, a, b paths) and the number of `rounds`. The
pods are plumbed and the servers run as in `pylium bench datapath` (its worker's helpers).
Export on is pinned in a scratch bpffs directory (the observer opens the ring buffer by its
pin; removed at the end), export off is unpinned.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import replace
from typing import Any

from pylium.bench.datapath import Progress
from pylium.bench.datapath_worker import (
    POD_CIDR,
    POD_IPS,
    ROUTER_IP,
    Attached,
    Sample,
    add_endpoints,
    attached,
    plumb_routed,
    progress_to_stderr,
    require_node_netns,
    rotated,
    run_test,
    servers,
    total_rate,
)
from pylium.bench.flows import bench_observer, scratch_pin_dir
from pylium.bench.flows_pods import TESTS, VARIANTS
from pylium.datapath.lxc import LxcObjects, NodeConfig
from pylium.datapath.netlink import PyrouteNetlink
from pylium.endpoint.model import Endpoint
from pylium.hubble.observer import Observer


def _known(endpoints: Attached) -> list[Endpoint]:
    """Both pods as the observer's endpoint lookup knows them."""
    return [
        replace(ep, pod_name=ep.container_id, pod_namespace="bench", host_ifindex=d.host_ifindex)
        for ep, d in endpoints
    ]


def _lost(observer: Observer) -> int:
    """Events lost so far: ring buffer full in the datapath, or undecodable."""
    return sum(observer.status().lost.values())


async def run(netns: dict[str, str], rounds: int, progress: Progress) -> dict[str, Any]:
    """Plumb, load both variants, run the interleaved slices; the result as JSON data."""
    nl = PyrouteNetlink()
    await nl.start()
    try:
        progress("plumbing: node with pylium_host, pods a and b as the agent does")
        endpoints = await plumb_routed(nl, netns)
    finally:
        await nl.stop()
    on_config = NodeConfig(router_ip=ROUTER_IP, pod_cidr=POD_CIDR)
    with (
        scratch_pin_dir() as pin_dir,
        LxcObjects.load(on_config, pin_dir) as on,
        LxcObjects.load(replace(on_config, trace_events=False)) as off,
        servers(netns["b"]),
    ):
        add_endpoints(on, endpoints)
        add_endpoints(off, endpoints)
        observer = bench_observer(pin_dir, _known(endpoints), ROUTER_IP, POD_CIDR)
        await observer.start()
        try:
            objs = {"export_on": on, "export_off": off}
            samples: dict[str, dict[str, list[Sample]]] = {
                v: {t: [] for t in TESTS} for v in VARIANTS
            }
            flows, lost = {}, {}
            for test in TESTS:
                seen, lost0 = observer.ring.seen, _lost(observer)
                for r in range(rounds):
                    progress(f"{test}: round {r + 1}/{rounds}")
                    for variant in rotated(r, VARIANTS):
                        with attached(objs[variant], endpoints):
                            sample = await asyncio.to_thread(run_test, test, netns["a"], POD_IPS[1])
                        samples[variant][test].append(sample)
                await asyncio.sleep(0.2)  # the observer drains the last slice's events
                flows[test] = observer.ring.seen - seen
                lost[test] = _lost(observer) - lost0
        finally:
            await observer.stop()
    return {
        "rounds": rounds,
        "rates": {v: {t: total_rate(s) for t, s in by.items()} for v, by in samples.items()},
        "slices": {v: {t: [x.rate for x in s] for t, s in by.items()} for v, by in samples.items()},
        "flows": flows,
        "lost": lost,
    }


def main(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the worker for `spec`; refuses to run outside the spec's node namespace."""
    require_node_netns(spec)
    return asyncio.run(run(spec["netns"], int(spec["rounds"]), progress_to_stderr))


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
