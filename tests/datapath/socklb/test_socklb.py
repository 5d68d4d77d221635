"""Socket LB for real: sock.o on a test cgroup, its maps filled by the ServiceLB component from
a Service and its EndpointSlices on a sqlite store. A process moved into the cgroup (running in
a scratch netns whose loopback holds the backends on 127.0.0.2/.3) reaches a backend through
the ClusterIP, sees the ClusterIP as its peer and as the source of UDP replies, and gets
ECONNREFUSED from a service without endpoints, and finds a NodePort on the node's address once
the ipcache says it is the host; a process outside the cgroup is untouched. The feature tests:
ClientIP affinity sticks and expires, internalTrafficPolicy=Local keeps to the node's backend
(and fails the connect when there is none), a terminating backend gets no new connections while
an established one keeps working, and named target ports of a multi-port service resolve.

Everything is test-owned: netns `pyl-tk-<random>`, cgroup and pins `.../pylium/tk-<random>`."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest

from pylium.datapath import libbpf
from pylium.datapath.maps import RawMap
from pylium.datapath.socklb import HOOKS, RootCgroupRefused, SockLB, link_pin
from pylium.ipcache.encoding import VALUE, lpm_key
from pylium.loadbalancer.encoding import SERVICE_VALUE
from pylium.loadbalancer.reconciler import ServiceLB, ServiceLBParams
from pylium.operator.endpointslices import desired_slices
from pylium.paths import BPFFS_ROOT, CGROUP_ROOT
from pylium.store import Object
from pylium.store.sqlite import SqliteStore
from tests.support import eventually, wait_for

pytestmark = pytest.mark.root

NODE = "tk-node1"
CLUSTER_IP, EMPTY_IP, NODEPORT_IP, STICKY_IP = (
    "10.96.0.10",
    "10.96.0.11",
    "10.96.0.12",
    "10.96.0.13",
)
NODE_IP, NODE_PORT = "127.0.0.1", 30080
IDENTITY_HOST = 1
BACKENDS = ("127.0.0.2", "127.0.0.3")

SERVER = """
import socket, sys, threading
def tcp(ip):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, 8080)); s.listen(16)
    while True:
        c, _ = s.accept(); c.sendall(ip.encode()); c.close()
def udp(ip):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((ip, 5353))
    while True:
        data, peer = s.recvfrom(100); s.sendto(ip.encode(), peer)
def answer(c, ip):
    with c:
        while True:
            c.sendall(f"{ip}:9090".encode())
            if not c.recv(100):
                return
def hold(ip):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, 9090)); s.listen(16)
    while True:
        c, _ = s.accept()
        threading.Thread(target=answer, args=(c, ip), daemon=True).start()
for ip in sys.argv[1:]:
    for f in (tcp, udp, hold):
        threading.Thread(target=f, args=(ip,), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""

CLIENT = """
import json, socket, sys
ip, tcp_port, udp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = {}
try:
    s = socket.create_connection((ip, tcp_port), timeout=2)
    out["tcp"] = s.recv(100).decode(); out["peer"] = s.getpeername()[0]; s.close()
except OSError as e:
    out["tcp_errno"] = e.errno
if udp_port:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(2)
    try:
        u.sendto(b"hi", (ip, udp_port))
        data, src = u.recvfrom(100); out["udp"] = data.decode(); out["udp_src"] = list(src)
    except OSError as e:
        out["udp_errno"] = e.errno
print(json.dumps(out))
"""

HOLD_CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print(s.recv(100).decode(), s.getpeername()[0], flush=True)
for line in sys.stdin:
    s.sendall(b"again"); print(s.recv(100).decode(), s.getpeername()[0], flush=True)
"""


@pytest.fixture
def lab() -> Iterator[tuple[str, Path, Path]]:
    """(netns, cgroup, pin dir), all named tk-<random>, removed afterwards."""
    tag = f"tk-{secrets.token_hex(4)}"
    netns, cgroup, pins = f"pyl-{tag}", CGROUP_ROOT / tag, BPFFS_ROOT / tag
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        cgroup.mkdir(parents=True)
        yield netns, cgroup, pins
    finally:
        shutil.rmtree(pins, ignore_errors=True)  # unpinning the links detaches them
        if cgroup.exists():
            cgroup.rmdir()
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)


@pytest.fixture
def servers(lab: tuple[str, Path, Path]) -> Iterator[None]:
    netns = lab[0]
    with subprocess.Popen(
        ["nsenter", f"--net=/var/run/netns/{netns}", "--", sys.executable, "-c", SERVER,
         *BACKENDS],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            yield
        finally:
            proc.kill()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.db", poll_interval=0.01)
    try:
        yield s
    finally:
        await s.close()


def service(name: str, cluster_ip: str) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "test"},
        "spec": {
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "selector": {"app": name},
            "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"},
            ],
        },
    }


PORTS = [
    {"name": "web", "containerPort": 8080},
    {"name": "hold", "containerPort": 9090},
    {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
]
"""The servers' ports, named (for named targetPorts)."""


def pod(name: str, app: str, ip: str, node: str = NODE) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "test", "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x", "ports": PORTS}]},
        "status": {"phase": "Running", "podIP": ip,
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }  # fmt: skip


def nodeport_service() -> Object:
    """`np`: TCP only, NodePort NODE_PORT, selecting the web pods."""
    svc = service("np", NODEPORT_IP)
    svc["spec"]["type"] = "NodePort"
    svc["spec"]["selector"] = {"app": "web"}
    svc["spec"]["ports"] = [
        {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": NODE_PORT}
    ]
    return svc


async def fill(store: SqliteStore) -> None:
    """Service `web` with both backends, `empty` with none, NodePort `np`, and their slices."""
    web, empty = service("web", CLUSTER_IP), service("empty", EMPTY_IP)
    pods = [pod(f"web-{i}", "web", ip) for i, ip in enumerate(BACKENDS)]
    for svc in (web, empty, nodeport_service()):
        await store.create(svc)
        for sl in desired_slices(svc, pods) or []:
            await store.create(sl)


def in_lab(netns: str, cgroup: Path | None, script: str, *args: object) -> list[str]:
    """The command running a Python script in the netns, inside `cgroup` if given."""
    run = f"exec nsenter --net=/var/run/netns/{netns} -- {sys.executable} -I -c '{script}'"
    run += "".join(f" {a}" for a in args)
    if cgroup is not None:
        run = f"echo $$ > {cgroup}/cgroup.procs && {run}"
    return ["sh", "-c", run]


def client(
    netns: str, cgroup: Path | None, target: str, port: int = 80, udp_port: int = 53
) -> dict[str, Any]:
    """Run CLIENT in the netns, inside `cgroup` if given (udp_port 0: TCP only)."""
    cmd = in_lab(netns, cgroup, CLIENT, target, port, udp_port)
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def create(store: SqliteStore, svc: Object, pods: list[Object]) -> None:
    """A service and its EndpointSlices (as the operator would write them) from `pods`."""
    await store.create(svc)
    for sl in desired_slices(svc, pods) or []:
        await store.apply(sl)


async def serve(store: SqliteStore, sock: SockLB, entries: int) -> ServiceLB:
    """A started ServiceLB, once the services map holds `entries` entries."""
    component = ServiceLB(ServiceLBParams(NODE), store, sock)
    await component.start()

    async def filled() -> bool:
        return len(sock.contents()["services"]) == entries

    await eventually(filled)
    return component


async def test_socket_lb_translates_for_the_cgroup_only(lab, servers, store) -> None:
    netns, cgroup, pins = lab
    with SockLB.load(pins, cgroup) as sock:
        component = ServiceLB(ServiceLBParams(NODE), store, sock)
        await component.start()
        try:
            await fill(store)

            async def filled() -> bool:
                # web: 2 ports x (slot 0 + 2 backends); empty: 2 ports x slot 0; np: ClusterIP
                # and 0.0.0.0:NODE_PORT x 3
                return len(sock.contents()["services"]) == 14

            await eventually(filled)
        finally:
            await component.stop()

        seen = set()
        for _ in range(12):
            out = client(netns, cgroup, CLUSTER_IP)
            assert out["tcp"] in BACKENDS
            assert out["peer"] == CLUSTER_IP  # getpeername4
            assert out["udp"] in BACKENDS
            assert out["udp_src"] == [CLUSTER_IP, 53]  # recvmsg4
            seen.add(out["tcp"])
            if seen == set(BACKENDS):
                break
        assert seen == set(BACKENDS)  # random slots reach both backends

        refused = client(netns, cgroup, EMPTY_IP)
        assert refused["tcp_errno"] == 111  # ECONNREFUSED, not EPERM
        assert refused["udp_errno"] == 111

        # A NodePort on a node address: only once the ipcache knows the address as a node's.
        assert client(netns, cgroup, NODE_IP, NODE_PORT, 0)["tcp_errno"] == 111  # nobody listens
        with RawMap.from_pin(pins / "pylium_ipcache4") as ipcache:
            key = lpm_key(IPv4Network(f"{NODE_IP}/32"))
            value = VALUE.pack(IDENTITY_HOST, bytes(4), 0, 0, 0)
            libbpf.check(libbpf.lib().bpf_map_update_elem(ipcache.fd, key, value, 0), "ipcache")
        nodeport = client(netns, cgroup, NODE_IP, NODE_PORT, 0)
        assert nodeport["tcp"] in BACKENDS and nodeport["peer"] == NODE_IP

        # Outside the cgroup nothing is translated: the ClusterIP has no route in the netns.
        outside = client(netns, None, CLUSTER_IP)
        assert outside["tcp_errno"] == 101  # ENETUNREACH
        assert "udp" not in outside


async def test_a_restart_reuses_pins_and_prunes_stale_entries(lab, store) -> None:
    netns, cgroup, pins = lab
    with SockLB.load(pins, cgroup) as sock:
        sock.prune({"backends": {b"\x07\x00\x00\x00": bytes(12)}})  # an entry nobody wants
        first_ids = {hook: link.info().id for hook, link in sock.links.items()}
    assert all(link_pin(pins, hook).exists() for hook in HOOKS)
    with SockLB.load(pins, cgroup) as sock:
        # Same links (updated in place), same maps (the stale backend survived the restart).
        assert {hook: link.info().id for hook, link in sock.links.items()} == first_ids
        assert b"\x07\x00\x00\x00" in sock.contents()["backends"]
        component = ServiceLB(ServiceLBParams(NODE), store, sock)
        await component.start()
        try:
            await fill(store)

            async def pruned() -> bool:
                have = sock.contents()
                return len(have["services"]) == 14 and b"\x07\x00\x00\x00" not in have["backends"]

            await eventually(pruned)
        finally:
            await component.stop()
        sock.detach()
    assert not any(link_pin(pins, hook).exists() for hook in HOOKS)
    assert client(netns, cgroup, CLUSTER_IP)["tcp_errno"] == 101  # detached: untranslated


def test_the_root_cgroup_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RootCgroupRefused):
        SockLB.load(tmp_path, Path("/sys/fs/cgroup/unified"))


async def test_client_ip_affinity_keeps_a_netns_on_one_backend(lab, servers, store) -> None:
    netns, cgroup, pins = lab
    sticky = service("sticky", STICKY_IP)
    sticky["spec"]["sessionAffinity"] = "ClientIP"
    sticky["spec"]["selector"] = {"app": "web"}
    pods = [pod(f"web-{i}", "web", ip) for i, ip in enumerate(BACKENDS)]
    with SockLB.load(pins, cgroup) as sock:
        component = ServiceLB(ServiceLBParams(NODE), store, sock)
        await component.start()
        try:
            await store.create(sticky)
            for sl in desired_slices(sticky, pods) or []:
                await store.create(sl)

            async def filled() -> bool:
                return len(sock.contents()["affinity_match"]) == 4  # 2 ports x 2 backends

            await eventually(filled)
        finally:
            await component.stop()
        # Without affinity 12 random picks all alike would happen once in 2048 runs.
        answers = {client(netns, cgroup, STICKY_IP, 80, 0)["tcp"] for _ in range(12)}
        assert len(answers) == 1 and answers <= set(BACKENDS)


async def test_client_ip_affinity_expires_after_its_timeout(lab, servers, store) -> None:
    netns, cgroup, pins = lab
    sticky = service("sticky", STICKY_IP)
    sticky["spec"].update(
        sessionAffinity="ClientIP",
        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 1}},
        selector={"app": "web"},
    )
    await create(store, sticky, [pod(f"web-{i}", "web", ip) for i, ip in enumerate(BACKENDS)])
    with SockLB.load(pins, cgroup) as sock:
        await (await serve(store, sock, 6)).stop()
        first = client(netns, cgroup, STICKY_IP, 80, 0)["tcp"]
        assert {client(netns, cgroup, STICKY_IP, 80, 0)["tcp"] for _ in range(4)} == {first}
        # Idle for longer than the timeout, the next connect chooses afresh: another backend
        # within a few tries (each choice is a coin flip, then sticky again).
        wait_for(
            lambda: client(netns, cgroup, STICKY_IP, 80, 0)["tcp"] != first,
            timeout=20,
            interval=1.3,
        )


async def test_internal_traffic_policy_local_keeps_to_the_node(lab, servers, store) -> None:
    netns, cgroup, pins = lab
    local = service("local", CLUSTER_IP)
    local["spec"].update(internalTrafficPolicy="Local", selector={"app": "web"})
    far = service("far", EMPTY_IP)
    far["spec"]["internalTrafficPolicy"] = "Local"
    pods = [pod("web-0", "web", BACKENDS[0]), pod("web-1", "web", BACKENDS[1], "tk-node2")]
    await create(store, local, pods)
    await create(store, far, [pod("far-0", "far", BACKENDS[1], "tk-node2")])
    with SockLB.load(pins, cgroup) as sock:
        # local: 2 ports x (slot 0 + the local backend); far: 2 ports x slot 0
        await (await serve(store, sock, 6)).stop()
        for _ in range(8):
            out = client(netns, cgroup, CLUSTER_IP)
            assert (out["tcp"], out["udp"]) == (BACKENDS[0], BACKENDS[0])
        # Endpoints only on another node: the connect fails on this one (dropped, not
        # rejected, as kube-proxy does), it does not go to the other node's backend.
        unreachable = client(netns, cgroup, EMPTY_IP)
        assert (unreachable["tcp_errno"], unreachable["udp_errno"]) == (113, 113)


async def test_a_terminating_backend_keeps_its_connections_but_gets_no_new_ones(
    lab, servers, store
) -> None:
    netns, cgroup, pins = lab
    svc = service("term", CLUSTER_IP)
    svc["spec"]["ports"] = [{"name": "hold", "port": 90, "targetPort": 9090, "protocol": "TCP"}]
    pods = [pod(f"term-{i}", "term", ip) for i, ip in enumerate(BACKENDS)]
    await create(store, svc, pods)
    with SockLB.load(pins, cgroup) as sock, subprocess.Popen(
        in_lab(netns, cgroup, HOLD_CLIENT, CLUSTER_IP, 90),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as held:  # fmt: skip
        component = await serve(store, sock, 3)
        try:
            assert held.stdin is not None and held.stdout is not None
            answer, peer = held.stdout.readline().split()
            assert peer == CLUSTER_IP
            backend = answer.split(":")[0]
            # That backend's pod is being deleted: serving, terminating, not ready.
            gone = next(p for p in pods if p["status"]["podIP"] == backend)
            gone["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
            for sl in desired_slices(svc, pods) or []:
                await store.apply(sl)

            async def quarantined() -> bool:
                values = [SERVICE_VALUE.unpack(v) for v in sock.contents()["services"].values()]
                return any((count, qcount) == (1, 1) for _, count, _, _, _, qcount in values)

            await eventually(quarantined)
            others = {client(netns, cgroup, CLUSTER_IP, 90, 0)["tcp"] for _ in range(8)}
            assert others == {f"{b}:9090" for b in BACKENDS if b != backend}
            held.stdin.write("again\n")
            held.stdin.flush()
            assert held.stdout.readline().split() == [f"{backend}:9090", CLUSTER_IP]
        finally:
            held.kill()
            await component.stop()


async def test_named_target_ports_of_a_multi_port_service(lab, servers, store) -> None:
    netns, cgroup, pins = lab
    svc = service("named", CLUSTER_IP)
    svc["spec"]["ports"] = [
        {"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"},
        {"name": "hold", "port": 90, "targetPort": "hold", "protocol": "TCP"},
        {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"},
    ]
    await create(store, svc, [pod("named-0", "named", BACKENDS[0])])
    with SockLB.load(pins, cgroup) as sock:
        await (await serve(store, sock, 6)).stop()  # 3 ports x (slot 0 + 1 backend)
        web = client(netns, cgroup, CLUSTER_IP, 80, 53)
        assert (web["tcp"], web["peer"], web["udp"]) == (BACKENDS[0], CLUSTER_IP, BACKENDS[0])
        assert client(netns, cgroup, CLUSTER_IP, 90, 0)["tcp"] == f"{BACKENDS[0]}:9090"
