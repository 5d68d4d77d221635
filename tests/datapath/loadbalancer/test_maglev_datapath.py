"""Maglev in the datapath: lib/lb.h's lb4_select_backend() run with BPF_PROG_TEST_RUN on two
simulated nodes whose LB maps the agent's code wrote (LBMaps -> SockLB.apply, the reconciler's
path). progs/lb_select.c is a tiny XDP program around the helper, sharing the pinned maps.

The nodes give out different backend ids (node 2 saw another service first), yet every flow
picks the same backend address on both; removing one of four backends moves only that
backend's flows (and a few more); a service annotated `random` ignores the node's maglev
default. Everything is test-owned: cgroups and pins `.../pylium/tm-<random>`."""

from __future__ import annotations

import secrets
import shutil
import struct
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from pylium.datapath.lbconfig import LBConfig
from pylium.datapath.loader import Collection, ObjectSpec
from pylium.datapath.socklb import SockLB
from pylium.datapath.testrun import prog_run
from pylium.loadbalancer.lbmaps import MAGLEV, LBMaps, LBParams
from pylium.loadbalancer.model import Algorithm
from pylium.loadbalancer.servicetable import ServiceTable
from pylium.paths import BPFFS_ROOT, CGROUP_ROOT

pytestmark = pytest.mark.root

M = 251
CONFIG = LBConfig(Algorithm.MAGLEV, M)
REPO = Path(__file__).resolve().parents[3]
PROG = Path(__file__).parent / "progs" / "lb_select.c"
CLANG = ["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu"]
SVC_IP, RANDOM_IP, OTHER_IP = "10.96.0.60", "10.96.0.61", "10.96.0.62"
BACKENDS = ("10.244.1.5", "10.244.1.6", "10.244.2.5", "10.244.3.5")
FLOW = struct.Struct("!4s4sHHB3x4sI")
"""struct lb_select_flow (backend_id is written native-endian: read it as such)."""
ETH = bytes(12) + b"\x08\x00"
TCP = 6


def service(name: str, ip: str, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "test", "annotations": annotations},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }


def endpoint_slice(svc: str, *addresses: str) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{svc}-1",
            "namespace": "test",
            "labels": {"kubernetes.io/service-name": svc},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [a], "nodeName": "tm-node1"} for a in addresses],
        "ports": [{"name": "http", "port": 8080}],
    }


class Node:
    """One simulated node: sock.o (the maps' owner) on its own cgroup, lb_select.o on the
    same pins, and the agent's LB map model."""

    def __init__(self, obj: Path, cgroup: Path, pins: Path) -> None:
        self.sock = SockLB.load(pins, cgroup, lb=CONFIG)
        try:
            self.prog: Collection = CONFIG.apply(ObjectSpec.from_file(obj)).load(pins)
        except BaseException:
            self.close_sock()
            raise
        self.table = ServiceTable()
        self.maps = LBMaps(LBParams("tm-node1", algorithm=Algorithm.MAGLEV, maglev_table_size=M))

    def apply(self, *objects: dict[str, Any]) -> None:
        for obj in objects:
            if obj["kind"] == "Service":
                self.table.upsert_service(obj)
            else:
                self.table.upsert_slice(obj)
        self.sock.apply(self.maps.sync(self.table.take_changes()))

    def pick(self, client: str, sport: int, dst: str = SVC_IP) -> tuple[str, int]:
        """(backend address, backend id) the helper chooses for a TCP flow to dst:80."""
        flow = FLOW.pack(
            IPv4Address(client).packed, IPv4Address(dst).packed, sport, 80, TCP, bytes(4), 0
        )
        out = prog_run(self.prog.program("lb_select"), ETH + flow)
        assert out.retval == 2  # XDP_PASS: the service was found
        *_, addr, be_id_be = FLOW.unpack(out.data[len(ETH) : len(ETH) + FLOW.size])
        return str(IPv4Address(addr)), int.from_bytes(be_id_be.to_bytes(4, "big"), "little")

    def close(self) -> None:
        self.prog.close()
        self.close_sock()

    def close_sock(self) -> None:
        self.sock.detach()
        self.sock.close()


@pytest.fixture(scope="module")
def lb_select(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("progs") / "lb_select.o"
    include = ["-I", str(REPO / "bpf" / "include"), "-I", str(REPO / "bpf")]
    subprocess.run([*CLANG, *include, "-c", str(PROG), "-o", str(out)], check=True)
    return out


@pytest.fixture
def nodes(lb_select: Path) -> Iterator[tuple[Node, Node]]:
    """Two nodes on cgroups and pins `tm-<random>`, removed afterwards whatever happened."""
    made: list[Node] = []
    dirs: list[tuple[Path, Path]] = []
    try:
        for _ in range(2):
            tag = f"tm-{secrets.token_hex(4)}"
            cgroup, pins = CGROUP_ROOT / tag, BPFFS_ROOT / tag
            dirs.append((cgroup, pins))
            cgroup.mkdir(parents=True)
            made.append(Node(lb_select, cgroup, pins))
        yield made[0], made[1]
    finally:
        for node in made:
            node.close()
        for cgroup, pins in dirs:
            shutil.rmtree(pins, ignore_errors=True)
            if cgroup.exists():
                cgroup.rmdir()


FLOWS = [(f"10.244.9.{i % 250 + 1}", 40000 + i) for i in range(400)]


def test_every_node_picks_the_same_backend_and_removal_moves_few(nodes) -> None:
    one, two = nodes
    # Node 2 first gives ids to another service's backends: its ids differ from node 1's.
    two.apply(service("other", OTHER_IP), endpoint_slice("other", "10.244.7.1", "10.244.7.2"))
    for node in nodes:
        node.apply(service("mag", SVC_IP), endpoint_slice("mag", *BACKENDS))
        assert node.sock.prune(node.maps.encoded()).empty()  # read back: inner maps as desired
        assert len(node.sock.contents()[MAGLEV][next(iter(node.sock.contents()[MAGLEV]))]) == 4 * M

    before = {f: one.pick(*f) for f in FLOWS}
    ids_two = {f: two.pick(*f) for f in FLOWS}
    assert {f: a for f, (a, _) in before.items()} == {f: a for f, (a, _) in ids_two.items()}
    assert any(before[f][1] != ids_two[f][1] for f in FLOWS)  # same address, other ids
    assert {a for a, _ in before.values()} == set(BACKENDS)  # the table spreads flows
    assert all(one.pick(*f) == before[f] for f in FLOWS[:50])  # a flow keeps its backend

    gone = BACKENDS[-1]
    one.apply(endpoint_slice("mag", *BACKENDS[:-1]))
    after = {f: one.pick(*f)[0] for f in FLOWS}
    assert gone not in after.values()
    stayed = [f for f in FLOWS if before[f][0] != gone]
    moved = [f for f in stayed if after[f] != before[f][0]]
    assert len(moved) <= len(stayed) // 10  # Maglev: about 1/N of the flows move, not more


def test_a_random_service_ignores_the_maglev_default(nodes) -> None:
    one, _ = nodes
    rnd = service("rnd", RANDOM_IP, **{"service.cilium.io/lb-algorithm": "random"})
    one.apply(rnd, endpoint_slice("rnd", *BACKENDS))
    assert not one.sock.contents()[MAGLEV]  # no table for it
    picks = {one.pick("10.244.9.1", 40000, RANDOM_IP)[0] for _ in range(40)}
    assert len(picks) > 1  # one flow, several backends: random slots
