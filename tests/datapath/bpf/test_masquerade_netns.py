"""BPF masquerade on a real uplink: a node namespace with one pod (the endpoint programs on its
veth) and an uplink to a world namespace that knows no pod address. A pod's TCP connection
and UDP exchange with a world server work once `BpfMasquerade` runs, and the server sees the
node's address; without it, the world cannot answer."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from pylium.datapath.conntrack import TupleFlags
from pylium.datapath.links import Direction, attach_tcx, tcx_programs
from pylium.datapath.lxc import LxcObjects, NodeConfig
from pylium.datapath.nat import BpfMasquerade, MasqueradeParams
from pylium.paths import BPFFS_ROOT
from tests.datapath.bpf.netns import Pod, _add_pod, in_netns, sh

pytestmark = pytest.mark.root

ROUTER_IP, POD_CIDR = "10.244.1.1", "10.244.1.0/24"
NODE_IP, WORLD_UNDERLAY_IP, WORLD_IP = "192.168.64.2", "192.168.64.1", "203.0.113.1"
TCP_PORT, UDP_PORT = 8080, 5353

_SERVER = """
import socket, sys, threading
ip, tcp_port, udp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t = socket.create_server((ip, tcp_port))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((ip, udp_port))
def serve_udp():
    while True:
        data, peer = u.recvfrom(2048)
        try:
            u.sendto(peer[0].encode(), peer)
        except OSError:  # a pod address: no route back from the world
            pass
threading.Thread(target=serve_udp, daemon=True).start()
print("ready", flush=True)
while True:
    conn, peer = t.accept()
    with conn:
        conn.recv(64)
        conn.sendall(peer[0].encode())
"""

_CLIENT = """
import socket, sys
ip, proto, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
if proto == "tcp":
    s = socket.create_connection((ip, port), timeout=timeout)
    s.sendall(b"who am i")
    print(s.recv(64).decode())
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    s.sendto(b"who am i", (ip, port))
    print(s.recvfrom(64)[0].decode())
"""


@dataclass(frozen=True)
class Lab:
    node: str
    world: str
    pod: Pod
    pin_dir: Path


def _world(node: str, world: str) -> None:
    sh("ip", "netns", "add", world)
    sh("ip", "-n", node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
       "netns", world)  # fmt: skip
    sh("ip", "-n", node, "addr", "add", f"{NODE_IP}/24", "dev", "eth0")
    sh("ip", "-n", node, "link", "set", "eth0", "up")
    sh("ip", "-n", node, "route", "add", "default", "via", WORLD_UNDERLAY_IP, "dev", "eth0")
    sh("ip", "-n", world, "addr", "add", f"{WORLD_UNDERLAY_IP}/24", "dev", "eth0")
    sh("ip", "-n", world, "addr", "add", f"{WORLD_IP}/32", "dev", "lo")
    sh("ip", "-n", world, "link", "set", "eth0", "up")
    sh("ip", "-n", world, "link", "set", "lo", "up")


@pytest.fixture
def lab() -> Iterator[Lab]:
    """Node, pod and world namespaces (pyl-tm-<random>-*), the pod's endpoint programs
    attached; everything (namespaces, pins) removed afterwards."""
    prefix = f"pyl-tm-{secrets.token_hex(3)}"
    node, world, pod_ns = f"{prefix}-node", f"{prefix}-world", f"{prefix}-a"
    pin_dir = BPFFS_ROOT / f"tm-{secrets.token_hex(4)}"
    made: list[str] = []
    try:
        sh("ip", "netns", "add", node)
        made.append(node)
        sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        made.append(pod_ns)
        pod = _add_pod(node, pod_ns, "lxca", "10.244.1.10", "02:00:00:00:00:0a", 11, ROUTER_IP)
        sh("ip", "-n", node, "route", "add", f"{pod.ip}/32", "dev", pod.host_dev)
        made.append(world)
        _world(node, world)
        pin_dir.mkdir(parents=True)
        with ExitStack() as stack:
            objs = stack.enter_context(
                LxcObjects.load(NodeConfig(ROUTER_IP, POD_CIDR), pin_dir=pin_dir)
            )
            objs.add_endpoint(pod.endpoint())
            with in_netns(node):
                stack.enter_context(
                    attach_tcx(pod.host_ifindex, objs.from_container, Direction.INGRESS)
                )
                stack.enter_context(
                    attach_tcx(pod.host_ifindex, objs.to_container, Direction.EGRESS)
                )
            yield Lab(node, world, pod, pin_dir)
    finally:
        shutil.rmtree(pin_dir, ignore_errors=True)
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def world_server(lab: Lab) -> Iterator[None]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.world, sys.executable, "-I", "-c", _SERVER, WORLD_IP,
         str(TCP_PORT), str(UDP_PORT)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def ask_world(lab: Lab, proto: str, timeout: float = 2.0) -> str | None:
    """The source address the world server saw for a request from the pod (None: no answer)."""
    port = TCP_PORT if proto == "tcp" else UDP_PORT
    done = subprocess.run(
        ["ip", "netns", "exec", lab.pod.netns, sys.executable, "-I", "-c", _CLIENT, WORLD_IP,
         proto, str(port), str(timeout)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    return done.stdout.strip() if done.returncode == 0 else None


def masquerade(lab: Lab) -> BpfMasquerade:
    return BpfMasquerade(MasqueradeParams(lab.pin_dir, "eth0", "10.244.0.0/16"))


def test_that_pods_reach_the_world_as_the_node_only_with_masquerade(lab, world_server):
    # The world has no route to pods: without masquerade the answer goes nowhere.
    assert ask_world(lab, "udp", timeout=0.5) is None
    masq = masquerade(lab)
    with in_netns(lab.node):
        asyncio.run(masq.start())
    try:
        assert masq.node_ip == NODE_IP
        assert ask_world(lab, "tcp") == NODE_IP
        assert ask_world(lab, "udp") == NODE_IP
        mapped = {
            (k.nexthdr, TupleFlags(k.flags))
            for k in masq.objs.snat
            if bytes(k.saddr) == bytes([10, 244, 1, 10])
        }
        assert mapped == {(6, TupleFlags.OUT), (17, TupleFlags.OUT)}
    finally:
        asyncio.run(masq.stop())
    # Stopping the agent's component keeps the pinned links: traffic keeps flowing.
    assert ask_world(lab, "tcp") == NODE_IP


def test_that_a_restart_swaps_the_programs_into_the_pinned_links(lab, world_server):
    first, second = masquerade(lab), masquerade(lab)
    with in_netns(lab.node):
        asyncio.run(first.start())
        asyncio.run(first.stop())
        asyncio.run(second.start())
    try:
        pins = sorted(p.name for p in second.links_dir.iterdir())
        assert pins == ["eth0_egress", "eth0_ingress"]
        with in_netns(lab.node):
            ifindex = socket.if_nametoindex("eth0")
            attached = {d: tcx_programs(ifindex, d) for d in Direction}
        # One program per hook, the newly loaded ones: swapped in, not attached twice.
        assert attached == {
            Direction.EGRESS: [second.objs.to_netdev.id],
            Direction.INGRESS: [second.objs.from_netdev.id],
        }
        assert ask_world(lab, "tcp") == NODE_IP
    finally:
        asyncio.run(second.stop())
