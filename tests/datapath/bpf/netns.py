"""Test network namespaces for the BPF attach tests: a node namespace holding two pods'
host-side veths (lxca, lxcb), and the two pod namespaces, plumbed as the agent would.

Nothing here touches the root namespace: devices are created inside the test namespaces
and every name starts with pyl-tb-<random>."""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pylium.datapath.lxc import EndpointInfo

_CLONE_NEWNET = 0x40000000


def sh(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


@contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the calling thread inside netns `name` (ifindexes and attach resolve there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        try:
            yield
        finally:
            if libc.setns(back, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(target)
        os.close(back)


@dataclass(frozen=True)
class Pod:
    netns: str
    host_dev: str
    ip: str
    mac: str
    lxc_id: int
    host_ifindex: int
    host_mac: str

    def endpoint(self) -> EndpointInfo:
        return EndpointInfo.make(
            ifindex=self.host_ifindex,
            lxc_id=self.lxc_id,
            ip=self.ip,
            mac=self.mac,
            node_mac=self.host_mac,
        )


@dataclass(frozen=True)
class Topology:
    node: str
    a: Pod
    b: Pod


def _add_pod(node: str, netns: str, dev: str, ip: str, mac: str, lxc_id: int, gw: str) -> Pod:
    sh("ip", "netns", "add", netns)
    sh("ip", "-n", node, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", netns)
    sh("ip", "-n", netns, "link", "set", "eth0", "address", mac, "up")
    sh("ip", "-n", netns, "link", "set", "lo", "up")
    sh("ip", "-n", netns, "addr", "add", f"{ip}/32", "dev", "eth0")
    sh("ip", "-n", netns, "route", "add", gw, "dev", "eth0", "scope", "link")
    sh("ip", "-n", netns, "route", "add", "default", "via", gw, "dev", "eth0")
    sh("ip", "-n", node, "link", "set", dev, "up")
    (link,) = json.loads(sh("ip", "-n", node, "-j", "link", "show", dev))
    return Pod(netns, dev, ip, mac, lxc_id, int(link["ifindex"]), str(link["address"]))


@contextmanager
def topology(gw: str) -> Iterator[Topology]:
    """Node + two pods (10.244.1.10 and .20); all namespaces deleted afterwards."""
    prefix = f"pyl-tb-{secrets.token_hex(3)}"
    made: list[str] = []
    try:
        node = f"{prefix}-node"
        sh("ip", "netns", "add", node)
        made.append(node)
        made.append(f"{prefix}-a")
        a = _add_pod(node, f"{prefix}-a", "lxca", "10.244.1.10", "02:00:00:00:00:0a", 11, gw)
        made.append(f"{prefix}-b")
        b = _add_pod(node, f"{prefix}-b", "lxcb", "10.244.1.20", "02:00:00:00:00:0b", 12, gw)
        yield Topology(node, a, b)
    finally:
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


_EXEC = ["ip", "netns", "exec"]

_ECHO_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 7777))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""

_ECHO_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[2]))
s.sendto(b"hello", (sys.argv[1], 7777))
try:
    sys.exit(0 if s.recvfrom(2048)[0] == b"hello" else 1)
except TimeoutError:
    sys.exit(1)
"""


@contextmanager
def udp_echo_server(pod: Pod) -> Iterator[None]:
    """A UDP echo server on pod:7777, stopped (by pid) afterwards."""
    proc = subprocess.Popen(
        [*_EXEC, pod.netns, sys.executable, "-I", "-c", _ECHO_SERVER, pod.ip],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def udp_echo(src: Pod, dst: Pod, timeout: float = 1.0) -> bool:
    """Whether one datagram from src to dst's echo server comes back."""
    done = subprocess.run(
        [*_EXEC, src.netns, sys.executable, "-I", "-c", _ECHO_CLIENT, dst.ip, str(timeout)],
        capture_output=True,
    )
    return done.returncode == 0
