"""The agent puts pod traffic on pylium's eBPF programs: pods talk through from-container and
to-container (the gateway answered by the programs, not the node's ARP), counters and conntrack
move, spoofed sources are dropped with reason 132, a SIGKILLed agent comes back without
interrupting a TCP stream or a UDP exchange and re-opens its pinned links, DEL removes links,
entries and pins, and removing the pin directory detaches everything."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pylium.agent.client import Endpoint
from pylium.datapath.links import Direction as Hook
from pylium.datapath.links import Link, tcx_programs
from pylium.datapath.lxc import MAP_LXC, MAP_LXC_IF, EndpointInfo, EndpointKey, IfindexKey
from pylium.datapath.maps import Map, RawMap
from tests.datapath.agent.conftest import Node, new_pod
from tests.datapath.agent.test_agent import in_netns, tcp_exchange
from tests.datapath.bpf.netns import in_netns as thread_in_netns
from tests.support import wait_for

pytestmark = pytest.mark.root

ROUTER = "10.244.7.1"
INVALID_SIP = 132


def counter(node: Node, reason: int, direction: str) -> int:
    """Packets of one (reason, direction) counter, read through the REST API."""
    for m in node.client.datapath_metrics():
        if (m["reason"], m["direction"]) == (reason, direction):
            return m["packets"]
    return 0


def link_pins(node: Node) -> list[str]:
    links = node.bpf_dir / "links"
    return sorted(p.name for p in links.iterdir()) if links.exists() else []


def pins_of(ep: Endpoint) -> list[str]:
    return [f"{ep['hostIfname']}_egress", f"{ep['hostIfname']}_ingress"]


def link_state(node: Node, ep: Endpoint) -> dict[str, tuple[int, int, int]]:
    """(link id, program id, ifindex) of each pinned link of an endpoint."""
    out = {}
    for name in pins_of(ep):
        with Link.from_pin(node.bpf_dir / "links" / name) as link:
            info = link.info()
        out[name] = (info.id, info.prog_id, info.ifindex)
    return out


def map_ids(node: Node) -> dict[str, int]:
    out = {}
    for pin in sorted(p for p in node.bpf_dir.iterdir() if p.is_file()):
        with RawMap.from_pin(pin) as m:
            out[pin.name] = m.info.id
    return out


def lxc_entries(node: Node) -> tuple[set[str], set[int]]:
    """Addresses in pylium_lxc and ifindexes in pylium_lxc_if."""
    with (
        RawMap.from_pin(node.bpf_dir / MAP_LXC) as raw_ip,
        RawMap.from_pin(node.bpf_dir / MAP_LXC_IF) as raw_if,
    ):
        ips = {".".join(map(str, k.ip4)) for k in Map(raw_ip, EndpointKey, EndpointInfo)}
        ifs = {k.ifindex for k in Map(raw_if, IfindexKey, EndpointInfo)}
    return ips, ifs


def programs_on(node: Node, ifindex: int) -> list[int]:
    with thread_in_netns(node.netns):
        return tcx_programs(ifindex, Hook.INGRESS) + tcx_programs(ifindex, Hook.EGRESS)


def test_pods_talk_through_the_programs_and_counters_and_conntrack_move(node, pods):
    # The node never answers ARP itself: the gateway must be answered by from-container.
    subprocess.run(
        in_netns(f"/var/run/netns/{node.netns}", "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=8"),
        check=True,
    )
    a_ns, b_ns = new_pod(pods), new_pod(pods)
    a = node.client.create_endpoint("ca", "eth0", a_ns)
    b = node.client.create_endpoint("cb", "eth0", b_ns)
    assert link_pins(node) == sorted(pins_of(a) + pins_of(b))
    assert {s[2] for s in link_state(node, a).values()} == {a["hostIfindex"]}
    assert lxc_entries(node) == ({a["ipv4"], b["ipv4"]}, {a["hostIfindex"], b["hostIfindex"]})
    before = {d: counter(node, 0, d) for d in ("egress", "ingress")}

    assert tcp_exchange(b_ns, a_ns, b["ipv4"]) == a["ipv4"]  # pod to pod: redirect
    # pod to the node's router IP: to the stack and back through to-container
    assert tcp_exchange(f"/var/run/netns/{node.netns}", a_ns, ROUTER) == a["ipv4"]

    after = {d: counter(node, 0, d) for d in ("egress", "ingress")}
    assert after["egress"] > before["egress"] + 6 and after["ingress"] > before["ingress"] + 6
    flows = {
        (e["scope"], e["src"], e["dst"], e["dport"])
        for e in node.client.datapath_conntrack()
        if e["proto"] == 6
    }
    assert {
        ("egress", a["ipv4"], b["ipv4"], 8080),
        ("ingress", a["ipv4"], b["ipv4"], 8080),
        ("egress", a["ipv4"], ROUTER, 8080),
    } <= flows
    # the agent's flow observer read the same traffic from the pinned event ring buffer
    seen = json.dumps(wait_for(lambda: node.client._call("GET", "/v1/flows"), timeout=5))
    assert a["ipv4"] in seen and b["ipv4"] in seen


SPOOF = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
for _ in range(5):
    s.sendto(b"spoofed", (sys.argv[2], 7777))
"""
RECEIVE = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7777)); s.settimeout(1.0)
print("ready", flush=True)
try:
    print(s.recvfrom(100)[1][0], flush=True)
except TimeoutError:
    print("nothing", flush=True)
"""


def test_a_spoofed_source_is_dropped_with_reason_132(node, pods):
    a_ns, b_ns = new_pod(pods), new_pod(pods)
    node.client.create_endpoint("ca", "eth0", a_ns)
    b = node.client.create_endpoint("cb", "eth0", b_ns)
    spoofed = "10.244.7.200"
    a_name = a_ns.rsplit("/", 1)[1]
    subprocess.run(["ip", "-n", a_name, "addr", "add", f"{spoofed}/32", "dev", "eth0"], check=True)
    drops = counter(node, INVALID_SIP, "egress")
    with subprocess.Popen(
        in_netns(b_ns, sys.executable, "-c", RECEIVE), stdout=subprocess.PIPE, text=True
    ) as receiver:
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
        subprocess.run(in_netns(a_ns, sys.executable, "-c", SPOOF, spoofed, b["ipv4"]), check=True)
        assert receiver.stdout.readline().strip() == "nothing"
    assert counter(node, INVALID_SIP, "egress") >= drops + 5


RECEIVER = """
import socket, threading
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("0.0.0.0", 9000)); t.listen()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 9001))
def udp():
    while True:
        data, peer = u.recvfrom(100); u.sendto(data, peer)
threading.Thread(target=udp, daemon=True).start()
print("listening", flush=True)
c, _ = t.accept()
while data := c.recv(65536):
    c.sendall(data)
"""
SENDER = """
import json, socket, sys, threading, time
dst = sys.argv[1]
stop = threading.Event()
res = {"tcp": 0, "udp": 0, "udp_lost": 0, "tcp_gap": 0.0, "udp_gap": 0.0, "error": None}
first = [threading.Event(), threading.Event()]
def tcp():
    try:
        c = socket.create_connection((dst, 9000), timeout=5)
        payload, last = b"x" * 1000, time.monotonic()
        while not stop.is_set():
            c.sendall(payload)
            got = 0
            while got < len(payload):
                chunk = c.recv(len(payload) - got)
                if not chunk:
                    raise ConnectionError("closed by peer")
                got += len(chunk)
            now = time.monotonic()
            res["tcp_gap"], last = max(res["tcp_gap"], now - last), now
            res["tcp"] += 1
            first[0].set()
            time.sleep(0.005)
    except Exception as err:
        res["error"] = repr(err)
        first[0].set()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.2)
    n, last = 0, time.monotonic()
    while not stop.is_set():
        n += 1
        s.sendto(str(n).encode(), (dst, 9001))
        try:
            while s.recvfrom(100)[0] != str(n).encode():
                pass
        except TimeoutError:
            res["udp_lost"] += 1
            continue
        now = time.monotonic()
        res["udp_gap"], last = max(res["udp_gap"], now - last), now
        res["udp"] += 1
        first[1].set()
        time.sleep(0.005)
threads = [threading.Thread(target=f) for f in (tcp, udp)]
for t in threads:
    t.start()
for e in first:
    e.wait(10)
print("running", flush=True)
sys.stdin.readline()
stop.set()
for t in threads:
    t.join()
print(json.dumps(res), flush=True)
"""


@contextmanager
def traffic(client_ns: str, server_ns: str, server_ip: str) -> Iterator[subprocess.Popen[str]]:
    """A TCP stream and a UDP request/response loop from one pod to another, running until
    the sender's stdin gets a line; both processes are killed (by pid) afterwards."""
    receiver = subprocess.Popen(
        in_netns(server_ns, sys.executable, "-c", RECEIVER), stdout=subprocess.PIPE, text=True
    )
    sender: subprocess.Popen[str] | None = None
    try:
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "listening"
        sender = subprocess.Popen(
            in_netns(client_ns, sys.executable, "-c", SENDER, server_ip),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert sender.stdout is not None and sender.stdout.readline().strip() == "running"
        yield sender
    finally:
        for proc in (sender, receiver):
            if proc is not None:
                proc.kill()
                proc.communicate()


def finish(sender: subprocess.Popen[str]) -> dict:
    out, _ = sender.communicate("stop\n", timeout=20)
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_sigkill_and_restart_keep_streams_flowing_and_reopen_the_pinned_links(node, pods):
    a_ns, b_ns = new_pod(pods), new_pod(pods)
    a = node.client.create_endpoint("ca", "eth0", a_ns)
    b = node.client.create_endpoint("cb", "eth0", b_ns)
    links_before = {**link_state(node, a), **link_state(node, b)}
    maps_before = map_ids(node)

    with traffic(a_ns, b_ns, b["ipv4"]) as sender:
        forwarded = counter(node, 0, "egress")
        assert node.kill() == -9
        node.start()
        links_after = {**link_state(node, a), **link_state(node, b)}
        # the stream keeps going on the new programs, counted in the same (pinned) map
        wait_for(lambda: counter(node, 0, "egress") > forwarded + 200, timeout=10)
        result = finish(sender)

    assert result["error"] is None, result
    assert result["tcp"] > 50 and result["udp"] > 50, result
    assert result["tcp_gap"] < 1.0 and result["udp_gap"] < 1.0, result
    # Re-opened, not re-created: the same links and maps, the freshly loaded programs in them.
    assert map_ids(node) == maps_before
    assert {k: (v[0], v[2]) for k, v in links_after.items()} == {
        k: (v[0], v[2]) for k, v in links_before.items()
    }
    assert all(links_after[k][1] != links_before[k][1] for k in links_before)
    assert any(
        (e["src"], e["dst"], e["dport"]) == (a["ipv4"], b["ipv4"], 9000)
        for e in node.client.datapath_conntrack()
    )


def test_delete_removes_links_entries_and_pins(node, pods):
    a_ns, b_ns = new_pod(pods), new_pod(pods)
    a = node.client.create_endpoint("ca", "eth0", a_ns)
    b = node.client.create_endpoint("cb", "eth0", b_ns)
    assert link_pins(node) == sorted(pins_of(a) + pins_of(b))
    node.client.delete_attachment("ca", "eth0")
    assert link_pins(node) == pins_of(b)
    assert lxc_entries(node) == ({b["ipv4"]}, {b["hostIfindex"]})

    # An endpoint that vanished while the agent was down is pruned at restart.
    node.stop()
    (node.state_dir / "endpoints" / f"{b['id']}.json").unlink()
    node.start()
    assert link_pins(node) == []
    assert lxc_entries(node) == (set(), set())
    assert b["hostIfname"] not in node.links()  # deleted as an orphan, its links with it


def test_check_names_a_missing_datapath_entry(node, pods):
    a = node.client.create_endpoint("ca", "eth0", new_pod(pods))
    assert node.client.check_endpoint(a["id"])["id"] == a["id"]
    with RawMap.from_pin(node.bpf_dir / MAP_LXC) as raw:
        Map(raw, EndpointKey, EndpointInfo).delete(EndpointKey.of(a["ipv4"]))
    with pytest.raises(Exception, match="pylium_lxc is missing"):
        node.client.check_endpoint(a["id"])


def test_stop_and_removing_the_pin_dir_detach_everything(node, pods):
    a = node.client.create_endpoint("ca", "eth0", new_pod(pods))
    assert len(programs_on(node, a["hostIfindex"])) == 2
    assert node.stop() == 0
    # a clean stop keeps the programs attached (a restart must not disturb traffic) ...
    assert len(programs_on(node, a["hostIfindex"])) == 2
    # ... and removing the node's pin directory (what `lab down` does) detaches them
    subprocess.run(["rm", "-r", str(node.bpf_dir)], check=True)
    assert not Path(node.bpf_dir).exists()
    wait_for(lambda: programs_on(node, a["hostIfindex"]) == [], timeout=10)


def test_a_lost_link_pin_is_named_by_check_and_reattached_at_restart(node, pods):
    a_ns, b_ns = new_pod(pods), new_pod(pods)
    a = node.client.create_endpoint("ca", "eth0", a_ns)
    b = node.client.create_endpoint("cb", "eth0", b_ns)
    lost = node.bpf_dir / "links" / f"{a['hostIfname']}_ingress"
    old_id = link_state(node, a)[lost.name][0]
    lost.unlink()  # the kernel detaches the program once the last reference is gone
    wait_for(lambda: len(programs_on(node, a["hostIfindex"])) == 1, timeout=10)
    with pytest.raises(Exception, match=f"from_container on ingress of {a['hostIfname']}"):
        node.client.check_endpoint(a["id"])

    node.stop()
    node.start()
    assert link_state(node, a)[lost.name][0] != old_id
    assert len(programs_on(node, a["hostIfindex"])) == 2
    assert node.client.check_endpoint(a["id"])["id"] == a["id"]
    assert tcp_exchange(b_ns, a_ns, b["ipv4"]) == a["ipv4"]
