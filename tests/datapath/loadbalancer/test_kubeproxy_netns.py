"""kube-proxy mode in real namespaces: the generated iptables-restore / nft input loads, the
kernel lists it back, a TCP connection to a ClusterIP reaches a backend listening in a second
namespace through the rules, and incremental syncs (add, then delete a service) load too.

Scratch namespaces are named pyl-tl-<random>-{node,backend} and removed after each test."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from pylium.loadbalancer.kubeproxy.applier import NetnsApplier
from pylium.loadbalancer.kubeproxy.params import ProxyParams
from pylium.loadbalancer.kubeproxy.proxier import Mode, Proxier
from pylium.loadbalancer.servicetable import ServiceTable
from tests.support import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

NODE_IP, BACKEND_IP = "10.244.1.1", "10.244.1.5"
CLUSTER_IP = "10.96.0.10"

SERVER = """
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 8080)); srv.listen(8); print("ready", flush=True)
while True:
    conn, peer = srv.accept(); conn.sendall(b"backend " + peer[0].encode()); conn.close()
"""

CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
print(s.recv(100).decode())
"""


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture
def netns_pair() -> Iterator[tuple[str, str]]:
    """A node namespace and a backend namespace joined by a veth pair."""
    prefix = f"pyl-tl-{secrets.token_hex(3)}"
    node, backend = f"{prefix}-node", f"{prefix}-backend"
    made: list[str] = []
    try:
        for ns in (node, backend):
            sh("ip", "netns", "add", ns)
            made.append(ns)
        sh("ip", "-n", node, "link", "add", "vnode", "type", "veth", "peer", "vbe", "netns",
           backend)  # fmt: skip
        for ns, dev, ip in ((node, "vnode", NODE_IP), (backend, "vbe", BACKEND_IP)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # The ClusterIP needs a route for the connect() to leave before DNAT (as on a node).
        sh("ip", "-n", node, "route", "add", "default", "dev", "vnode")
        yield node, backend
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def listener(netns_pair: tuple[str, str]) -> Iterator[None]:
    """A TCP server on BACKEND_IP:8080 in the backend namespace."""
    _, backend = netns_pair
    proc = subprocess.Popen(
        ["nsenter", f"--net=/var/run/netns/{backend}", "--", sys.executable, "-c", SERVER],
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


def objects(name: str, cluster_ip: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "test"},
            "spec": {
                "clusterIP": cluster_ip,
                "selector": {"app": name},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-1",
                "namespace": "test",
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [BACKEND_IP], "nodeName": "lab-node1"}],
            "ports": [{"name": "http", "port": 8080}],
        },
    ]


def connect(node: str, ip: str, port: int, timeout: float = 2.0) -> str:
    proc = subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{node}", "--", sys.executable, "-c", CLIENT, ip,
         str(port), str(timeout)],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    return proc.stdout.strip() if proc.returncode == 0 else f"failed: {proc.stderr.strip()}"


@pytest.mark.parametrize("mode", list(Mode))
def test_clusterip_reaches_backend(mode: Mode, netns_pair: tuple[str, str], listener: None) -> None:
    """Before the rules the ClusterIP answers nothing; after one sync it reaches the backend;
    a second service added and removed incrementally leaves no chain behind."""
    node, _ = netns_pair
    params = ProxyParams(
        "lab-node1",
        (IPv4Address(NODE_IP),),
        IPv4Network("10.244.0.0/16"),
        IPv4Network("10.96.0.0/16"),
    )
    applier = NetnsApplier(f"/var/run/netns/{node}")
    proxier = Proxier(mode, params, applier)
    table = ServiceTable()
    svc, eps = objects("web", CLUSTER_IP)
    table.upsert_service(svc)
    table.upsert_slice(eps)

    assert connect(node, CLUSTER_IP, 80, timeout=0.3).startswith("failed")
    proxier.sync(table)
    listing = applier.listing(mode)
    if mode == Mode.NFTABLES:
        assert "service-" in listing and "test/web/tcp/http" in listing
        assert f"{CLUSTER_IP} . tcp . 80 : goto service-" in listing
    else:
        assert ":KUBE-SVC-" in listing and "--to-destination 10.244.1.5:8080" in listing
        assert "-j KUBE-SERVICES" in listing  # the jump from the built-in chains
    assert wait_for(lambda: connect(node, CLUSTER_IP, 80) == f"backend {NODE_IP}", timeout=5)

    other, other_eps = objects("other", "10.96.0.11")
    table.upsert_service(other)
    table.upsert_slice(other_eps)
    proxier.sync(table)
    assert wait_for(lambda: connect(node, "10.96.0.11", 80).startswith("backend"), timeout=5)
    table.delete_service(other)
    table.delete_slice(other_eps)
    proxier.sync(table)
    assert proxier.pending_deletes == (mode == Mode.NFTABLES)
    proxier.sync(table)  # nothing changed: only the deferred deletes
    assert not proxier.pending_deletes
    listing = applier.listing(mode)
    assert "test/other" not in listing and "other:http" not in listing
    assert proxier.full_syncs == 1
    assert connect(node, CLUSTER_IP, 80) == f"backend {NODE_IP}"


def _normalised(mode: Mode, listing: str) -> list[str]:
    """Listing lines comparable across namespaces: for nft the sorted lines (element order is
    the kernel's), for iptables each chain's rules in order, chains sorted."""
    if mode == Mode.NFTABLES:
        return sorted(line.strip().rstrip(",") for line in listing.splitlines() if line.strip())
    rules: dict[str, list[str]] = {}
    for line in listing.splitlines():
        if line.startswith("-A "):
            rules.setdefault(line.split()[1], []).append(line)
        elif line.startswith(":"):
            rules.setdefault(line.split()[0][1:], [])
    return [r for chain in sorted(rules) for r in [f":{chain}", *rules[chain]]]


@pytest.fixture
def two_netns() -> Iterator[tuple[str, str]]:
    """Two empty scratch namespaces."""
    prefix = f"pyl-tl-{secrets.token_hex(3)}"
    made: list[str] = []
    try:
        for suffix in ("incr", "full"):
            sh("ip", "netns", "add", f"{prefix}-{suffix}")
            made.append(f"{prefix}-{suffix}")
        yield made[0], made[1]
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.parametrize("mode", list(Mode))
def test_incremental_syncs_equal_a_full_sync(mode: Mode, two_netns: tuple[str, str]) -> None:
    """After a series of partial syncs (add, scale, affinity, type change, delete) the kernel
    holds what one full sync of the final state gives in a fresh namespace."""
    incr_ns, full_ns = two_netns
    params = ProxyParams("lab-node1", (IPv4Address(NODE_IP),), IPv4Network("10.244.0.0/16"), None)
    incr = NetnsApplier(f"/var/run/netns/{incr_ns}")
    proxier = Proxier(mode, params, incr)
    table = ServiceTable()
    a, a_eps = objects("a", "10.96.0.1")
    b, b_eps = objects("b", "10.96.0.2")
    c, c_eps = objects("c", "10.96.0.3")
    steps = [
        lambda: (table.upsert_service(a), table.upsert_slice(a_eps)),
        lambda: (table.upsert_service(b), table.upsert_slice(b_eps), table.upsert_service(c)),
        lambda: table.upsert_slice(
            {**a_eps, "endpoints": [{"addresses": ["10.244.1.6"]}, {"addresses": ["10.244.1.7"]}]}
        ),
        lambda: table.upsert_service(
            {
                **b,
                "spec": {
                    **b["spec"],
                    "sessionAffinity": "ClientIP",
                    "type": "NodePort",
                    "ports": [{"name": "http", "port": 80, "nodePort": 30002}],
                },
            }
        ),
        lambda: table.upsert_slice(c_eps),
        lambda: (table.delete_service(a), table.delete_slice(a_eps)),
        lambda: table.upsert_service(b),
    ]
    for step in steps:
        step()
        proxier.sync(table)
    proxier.sync(table)  # the deferred deletes
    assert proxier.full_syncs == 1

    fresh = Proxier(mode, params, NetnsApplier(f"/var/run/netns/{full_ns}"))
    reference = ServiceTable()
    for svc in (b, c):
        reference.upsert_service(svc)
    reference.upsert_slice(b_eps)
    reference.upsert_slice(c_eps)
    fresh.sync(reference)
    got = _normalised(mode, incr.listing(mode))
    want = _normalised(mode, NetnsApplier(f"/var/run/netns/{full_ns}").listing(mode))
    assert got == want
    assert any("10.96.0.3" in line for line in got)
