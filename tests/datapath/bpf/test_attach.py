"""The endpoint programs attached with tcx to real veths in test namespaces: traffic between
two pods flows through them, stops when they are detached, and survives a restart (all fds
closed, then maps and links re-opened from their pins and the programs replaced)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pylium.datapath.conntrack import Ct4Tuple, TupleFlags
from pylium.datapath.events import Direction, DropReason, TracePoint
from pylium.datapath.links import Direction as Hook
from pylium.datapath.links import Link, attach_tcx
from pylium.datapath.lxc import EndpointInfo, EndpointKey, LxcObjects
from pylium.datapath.maps import Map, RawMap
from pylium.datapath.metrics import MetricsKey, MetricsValue, read_metrics
from tests.datapath.bpf.conftest import CONFIG, ROUTER_IP, Events
from tests.datapath.bpf.netns import Pod, Topology, in_netns, topology, udp_echo, udp_echo_server
from tests.support import wait_for

pytestmark = pytest.mark.root


@pytest.fixture
def topo() -> Iterator[Topology]:
    with topology(ROUTER_IP) as t:
        yield t


def attach_endpoint(topo: Topology, objs: LxcObjects, pod: Pod, pin_dir: Path) -> list[Link]:
    """What the agent does per pod: register it, attach both programs, pin the links."""
    objs.add_endpoint(pod.endpoint())
    with in_netns(topo.node):
        links = [
            attach_tcx(pod.host_ifindex, objs.from_container, Hook.INGRESS),
            attach_tcx(pod.host_ifindex, objs.to_container, Hook.EGRESS),
        ]
    for link, hook in zip(links, ("ingress", "egress"), strict=True):
        link.pin(pin_dir / f"link_{pod.host_dev}_{hook}")
    return links


def forwarded(metrics: Map[MetricsKey, MetricsValue], direction: Direction) -> int:
    counter = read_metrics(metrics).get((DropReason.FORWARDED, direction))
    return counter.packets if counter else 0


def test_that_pods_talk_through_the_programs_and_counters_move(topo, pin_dir):
    with LxcObjects.load(CONFIG, pin_dir=pin_dir) as objs:
        events = Events(objs)
        links = attach_endpoint(topo, objs, topo.a, pin_dir)
        links += attach_endpoint(topo, objs, topo.b, pin_dir)
        try:
            with udp_echo_server(topo.b):
                assert wait_for(lambda: udp_echo(topo.a, topo.b), timeout=5)

            # Both directions went pod to pod by redirect, and each pod received via to-container.
            assert forwarded(objs.metrics, Direction.EGRESS) >= 2
            assert forwarded(objs.metrics, Direction.INGRESS) >= 2
            request = Ct4Tuple.make(topo.a.ip, topo.b.ip, 0, 7777, 17, TupleFlags.OUT)
            tracked = [k for k in objs.ct4 if bytes(k.daddr) == bytes(request.daddr)]
            assert {TupleFlags(k.flags) for k in tracked} == {TupleFlags.OUT, TupleFlags.IN}
            to_b = [
                e
                for e in events.drain()
                if e.trace_point == TracePoint.TO_LXC and e.direction == Direction.EGRESS
            ]
            assert topo.b.host_ifindex in {e.ifindex for e in to_b}
        finally:
            events.close()
            for link in links:
                link.unpin()
                link.close()


def test_that_detaching_the_programs_stops_pod_traffic(topo, pin_dir):
    with LxcObjects.load(CONFIG, pin_dir=pin_dir) as objs:
        links = attach_endpoint(topo, objs, topo.a, pin_dir)
        links += attach_endpoint(topo, objs, topo.b, pin_dir)
        with udp_echo_server(topo.b):
            assert wait_for(lambda: udp_echo(topo.a, topo.b), timeout=5)
            for link in links:
                link.detach()
                link.unpin()
                link.close()
            # Without the programs nothing routes between the pods (the node has no routes).
            assert not udp_echo(topo.a, topo.b, timeout=0.5)
        assert not list(pin_dir.glob("link_*"))


def test_that_a_restart_keeps_traffic_and_map_contents(topo, pin_dir):
    objs = LxcObjects.load(CONFIG, pin_dir=pin_dir)
    links = attach_endpoint(topo, objs, topo.a, pin_dir)
    links += attach_endpoint(topo, objs, topo.b, pin_dir)
    with udp_echo_server(topo.b):
        assert wait_for(lambda: udp_echo(topo.a, topo.b), timeout=5)
        before = forwarded(objs.metrics, Direction.EGRESS)

        # The agent exits: every fd closed. Pinned links keep the programs attached.
        for link in links:
            link.close()
        objs.close()
        assert udp_echo(topo.a, topo.b)

        # It comes back: maps from their pins, contents intact, counters still running.
        with RawMap.from_pin(pin_dir / "pylium_lxc") as raw_lxc:
            lxc = Map(raw_lxc, EndpointKey, EndpointInfo)
            assert bytes(lxc.lookup(EndpointKey.of(topo.b.ip))) == bytes(topo.b.endpoint())
        with RawMap.from_pin(pin_dir / "pylium_metrics") as raw_metrics:
            metrics = Map(raw_metrics, MetricsKey, MetricsValue)
            assert forwarded(metrics, Direction.EGRESS) > before

        # Reload (re-using the pinned maps) and swap the new programs into the pinned links.
        with LxcObjects.load(CONFIG, pin_dir=pin_dir) as fresh:
            counted = forwarded(fresh.metrics, Direction.EGRESS)
            assert counted > before
            for pod in (topo.a, topo.b):
                for hook, prog in (
                    ("ingress", fresh.from_container),
                    ("egress", fresh.to_container),
                ):
                    with Link.from_pin(pin_dir / f"link_{pod.host_dev}_{hook}") as link:
                        link.update(prog)
                        assert link.info().prog_id == prog.id
            assert udp_echo(topo.a, topo.b)
            assert forwarded(fresh.metrics, Direction.EGRESS) > counted

            # Cleanup: unpinning the last reference detaches (the kernel frees links lazily).
            for pin in sorted(pin_dir.glob("link_*")):
                pin.unlink()
            wait_for(lambda: not udp_echo(topo.a, topo.b, timeout=0.3), timeout=5)
