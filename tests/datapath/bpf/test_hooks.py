"""The other attach paths: XDP and cgroup links, and the clsact + tc filter fallback, each on
test-owned objects only (a veth in a test namespace, a child cgroup of pylium's subtree)."""

from __future__ import annotations

import ctypes
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pylium.datapath.links import (
    AttachType,
    Direction,
    attach_cgroup,
    attach_tc,
    attach_xdp,
    tcx_supported,
)
from pylium.datapath.loader import Collection, ObjectSpec
from pylium.datapath.lxc import LxcObjects
from pylium.paths import CGROUP_ROOT
from tests.datapath.bpf.conftest import CONFIG, ROUTER_IP, build
from tests.datapath.bpf.netns import Topology, in_netns, topology, udp_echo, udp_echo_server
from tests.support import wait_for

pytestmark = pytest.mark.root

XDP_SLOT, CONNECT_SLOT = 0, 1


class Slot(ctypes.Structure):
    _fields_ = [("index", ctypes.c_uint32)]


class Count(ctypes.Structure):
    _fields_ = [("value", ctypes.c_uint64)]


@pytest.fixture
def hooks(tmp_path: Path) -> Iterator[Collection]:
    with ObjectSpec.from_file(build("hooks.c", tmp_path)).load() as coll:
        yield coll


def count(coll: Collection, slot: int) -> int:
    value: int = coll.map("hook_counts", Slot, Count).lookup(Slot(slot)).value
    return value


@pytest.fixture
def topo() -> Iterator[Topology]:
    with topology(ROUTER_IP) as t:
        yield t


@pytest.fixture
def cgroup() -> Iterator[Path]:
    path = CGROUP_ROOT / f"tb-{secrets.token_hex(4)}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        path.rmdir()


def test_that_an_xdp_link_sees_packets_until_closed(hooks, topo):
    with in_netns(topo.node):
        link = attach_xdp(topo.a.host_ifindex, hooks.program("count_xdp"))
    with link:
        # Pod A's ARP for its gateway arrives at the host-side veth: XDP counts it.
        udp_echo(topo.a, topo.b, timeout=0.2)
        assert count(hooks, XDP_SLOT) > 0
    seen = count(hooks, XDP_SLOT)
    udp_echo(topo.a, topo.b, timeout=0.2)
    assert count(hooks, XDP_SLOT) == seen


def test_that_a_cgroup_connect4_link_sees_connects_from_its_cgroup_only(hooks, cgroup):
    connect = (
        "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect(('127.0.0.1', 9))"
    )
    inside = f'echo $$ > {cgroup}/cgroup.procs && exec {sys.executable} -I -c "{connect}"'
    with attach_cgroup(cgroup, hooks.program("count_connect4"), AttachType.CGROUP_INET4_CONNECT):
        subprocess.run([sys.executable, "-I", "-c", connect], check=True)
        assert count(hooks, CONNECT_SLOT) == 0
        subprocess.run(["sh", "-c", inside], check=True)
        assert count(hooks, CONNECT_SLOT) == 1


def test_that_the_tc_fallback_carries_pod_traffic(topo, pin_dir):
    with LxcObjects.load(CONFIG, pin_dir=pin_dir) as objs:
        objs.from_container.pin(pin_dir / "prog_from_container")
        objs.to_container.pin(pin_dir / "prog_to_container")
        filters = []
        for pod in (topo.a, topo.b):
            objs.add_endpoint(pod.endpoint())
            filters.append(
                attach_tc(
                    pod.host_dev, pin_dir / "prog_from_container", Direction.INGRESS, topo.node
                )
            )
            filters.append(
                attach_tc(pod.host_dev, pin_dir / "prog_to_container", Direction.EGRESS, topo.node)
            )
        with udp_echo_server(topo.b):
            assert wait_for(lambda: udp_echo(topo.a, topo.b), timeout=5)
            for f in filters:
                f.detach()
            assert not udp_echo(topo.a, topo.b, timeout=0.5)


def test_that_the_tcx_probe_finds_tcx_on_this_kernel(pin_dir):
    # Kernel 6.18 has tcx (6.6+): a probe saying otherwise would turn attach errors into
    # a false NotSupported.
    with LxcObjects.load(CONFIG, pin_dir=pin_dir) as objs:
        assert tcx_supported(objs.from_container)
