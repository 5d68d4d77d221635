"""Fixtures of the BPF datapath tests: a private bpffs pin directory per test, the endpoint
programs loaded into it with two endpoints registered, and an event collector."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pylium.datapath.events import Event, RingBuffer
from pylium.datapath.lxc import EndpointInfo, LxcObjects, NodeConfig
from pylium.paths import BPFFS_ROOT

ROUTER_IP = "10.244.1.1"
POD_CIDR = "10.244.1.0/24"
CONFIG = NodeConfig(router_ip=ROUTER_IP, pod_cidr=POD_CIDR)

# BPF_PROG_TEST_RUN gives a tc program skb->ifindex 1 (loopback): endpoint A "owns" it, so
# from-container sees A's packets and to-container sees packets for A.
A = EndpointInfo.make(
    ifindex=1, lxc_id=101, ip="10.244.1.10", mac="02:00:00:00:00:0a", node_mac="02:00:00:00:01:0a"
)
B = EndpointInfo.make(
    ifindex=4242,
    lxc_id=102,
    ip="10.244.1.20",
    mac="02:00:00:00:00:0b",
    node_mac="02:00:00:00:01:0b",
)
A_IP, B_IP = "10.244.1.10", "10.244.1.20"
A_MAC, A_NODE_MAC = "02:00:00:00:00:0a", "02:00:00:00:01:0a"
B_MAC, B_NODE_MAC = "02:00:00:00:00:0b", "02:00:00:00:01:0b"
OUTSIDE_IP = "192.0.2.7"


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    """/sys/fs/bpf/pylium/tb-<random>, removed afterwards with whatever was pinned in it."""
    path = BPFFS_ROOT / f"tb-{secrets.token_hex(4)}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def load_objects(pin_dir: Path, config: NodeConfig = CONFIG) -> LxcObjects:
    objs = LxcObjects.load(config, pin_dir=pin_dir)
    objs.add_endpoint(A)
    objs.add_endpoint(B)
    return objs


@pytest.fixture
def objs(pin_dir: Path) -> Iterator[LxcObjects]:
    with load_objects(pin_dir) as loaded:
        yield loaded


class Events:
    """Everything the programs reported so far, read from the ring buffer on demand."""

    def __init__(self, objs: LxcObjects) -> None:
        self.seen: list[Event] = []
        self._rb = RingBuffer(objs.events, self.seen.append)

    def drain(self) -> list[Event]:
        self._rb.consume()
        out, self.seen[:] = list(self.seen), []
        return out

    def close(self) -> None:
        self._rb.close()


@pytest.fixture
def events(objs: LxcObjects) -> Iterator[Events]:
    ev = Events(objs)
    try:
        yield ev
    finally:
        ev.close()


PROGS = Path(__file__).parent / "progs"
CLANG = ["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu"]


def build(source: str, out_dir: Path) -> Path:
    """Compile one of progs/*.c exactly as bpf/Makefile does."""
    out = out_dir / source.replace(".c", ".o")
    subprocess.run(
        [*CLANG, "-c", str(PROGS / source), "-o", str(out)],
        check=True,
    )
    return out
