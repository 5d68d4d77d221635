"""to-netdev and from-netdev on crafted packets (BPF_PROG_TEST_RUN): pod traffic to the outside
leaves with the node's address and a port of the masquerade range, replies find their way back
to the pod, and everything else passes byte for byte."""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from pylium.datapath.conntrack import TupleFlags, monotonic_seconds
from pylium.datapath.events import Direction, DropReason
from pylium.datapath.lxc import MAP_LXC, MAP_METRICS, EndpointInfo, EndpointKey
from pylium.datapath.maps import Map, RawMap
from pylium.datapath.metrics import MetricsKey, MetricsValue, read_metrics
from pylium.datapath.nat import PORT_MAX, PORT_MIN, NatConfig, NetdevObjects, gc
from pylium.datapath.testrun import prog_run
from tests.datapath.bpf import packets as pk
from tests.datapath.bpf.conftest import A_IP, B_IP, OUTSIDE_IP, A

pytestmark = pytest.mark.root

TC_ACT_OK, TC_ACT_SHOT = 0, 2
NODE_IP = "192.168.64.2"
CLUSTER = "10.244.0.0/16"
NODE_MAC, GW_MAC = "02:00:00:00:64:02", "02:00:00:00:64:01"
REMOTE_POD = "10.244.2.7"


def load(pin_dir: Path, **ports: int) -> NetdevObjects:
    objs = NetdevObjects.load(NatConfig(NODE_IP, CLUSTER, **ports), pin_dir=pin_dir)
    # The endpoint map is shared by name with the endpoint programs: register pod A there.
    with RawMap.from_pin(pin_dir / MAP_LXC) as raw:
        Map(raw, EndpointKey, EndpointInfo).update(EndpointKey(ip4=A.ip4), A)
    return objs


@pytest.fixture
def nat(pin_dir: Path) -> Iterator[NetdevObjects]:
    with load(pin_dir) as objs:
        yield objs


def out(ip_packet: bytes) -> bytes:
    """A frame leaving the node by its uplink."""
    return pk.ethernet(NODE_MAC, GW_MAC, pk.ETH_P_IP, ip_packet)


def into(ip_packet: bytes) -> bytes:
    """A frame arriving at the node's uplink."""
    return pk.ethernet(GW_MAC, NODE_MAC, pk.ETH_P_IP, ip_packet)


def parsed(frame: bytes) -> dict[str, int | str]:
    """Addresses, ports (ICMP: the echo id as both) of a frame; asserts valid checksums."""
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    assert pk.checksum(ip[:ihl]) == 0, "IPv4 header checksum"
    proto, src, dst = ip[9], ip[12:16], ip[16:20]
    l4 = ip[ihl:]
    if proto == pk.PROTO_ICMP:
        assert pk.checksum(l4) == 0, "ICMP checksum"
        sport = dport = struct.unpack("!H", l4[4:6])[0]
    else:
        pseudo = src + dst + struct.pack("!BBH", 0, proto, len(l4))
        assert pk.checksum(pseudo + l4) == 0, "L4 checksum"
        sport, dport = struct.unpack("!HH", l4[:4])
    return {
        "src": str(ipaddress.IPv4Address(src)),
        "dst": str(ipaddress.IPv4Address(dst)),
        "sport": sport,
        "dport": dport,
    }


def entries(objs: NetdevObjects) -> dict[tuple[str, str, int, int, int, str], tuple[str, int]]:
    """The NAT map as {(src, dst, sport, dport, proto, dir): (to_addr, to_port)}."""
    return {
        (
            str(ipaddress.IPv4Address(bytes(k.saddr))),
            str(ipaddress.IPv4Address(bytes(k.daddr))),
            socket.ntohs(k.sport),
            socket.ntohs(k.dport),
            k.nexthdr,
            TupleFlags(k.flags).name,
        ): (str(ipaddress.IPv4Address(bytes(v.to_addr))), socket.ntohs(v.to_port))
        for k, v in objs.snat.items()
    }


@pytest.mark.parametrize(
    ("proto", "request_pkt", "reply_pkt"),
    [
        (
            pk.PROTO_TCP,
            lambda: pk.tcp(A_IP, OUTSIDE_IP, 40000, 80, pk.TCP_SYN, b"hello"),
            lambda port: pk.tcp(OUTSIDE_IP, NODE_IP, 80, port, pk.TCP_SYN | pk.TCP_ACK, b"hi"),
        ),
        (
            pk.PROTO_UDP,
            lambda: pk.udp(A_IP, OUTSIDE_IP, 40000, 53, b"query"),
            lambda port: pk.udp(OUTSIDE_IP, NODE_IP, 53, port, b"answer"),
        ),
    ],
    ids=["tcp", "udp"],
)
def test_that_pod_traffic_to_the_outside_is_masqueraded_and_replies_come_back(
    nat, proto, request_pkt, reply_pkt
):
    sent = prog_run(nat.to_netdev, out(request_pkt()))
    assert sent.retval == TC_ACT_OK
    leaving = parsed(sent.data)
    port = int(leaving["sport"])
    assert leaving == {"src": NODE_IP, "dst": OUTSIDE_IP, "sport": port, "dport": leaving["dport"]}
    assert PORT_MIN <= port <= PORT_MAX
    dport = int(leaving["dport"])
    assert entries(nat) == {
        (A_IP, OUTSIDE_IP, 40000, dport, proto, "OUT"): (NODE_IP, port),
        (OUTSIDE_IP, NODE_IP, dport, port, proto, "IN"): (A_IP, 40000),
    }

    answered = prog_run(nat.from_netdev, into(reply_pkt(port)))
    assert answered.retval == TC_ACT_OK
    assert parsed(answered.data) == {"src": OUTSIDE_IP, "dst": A_IP, "sport": dport, "dport": 40000}

    # The flow's next packet keeps its mapping.
    again = prog_run(nat.to_netdev, out(request_pkt()))
    assert parsed(again.data)["sport"] == port
    assert len(entries(nat)) == 2


def test_that_an_icmp_echo_is_masqueraded_by_its_identifier(nat):
    sent = prog_run(nat.to_netdev, out(pk.icmp_echo(A_IP, OUTSIDE_IP, ident=7)))
    leaving = parsed(sent.data)
    ident = int(leaving["sport"])
    assert leaving["src"] == NODE_IP and PORT_MIN <= ident <= PORT_MAX
    assert entries(nat)[(OUTSIDE_IP, NODE_IP, ident, ident, pk.PROTO_ICMP, "IN")] == (A_IP, 7)
    reply = pk.icmp_echo(OUTSIDE_IP, NODE_IP, ident=ident, reply=True)
    back = parsed(prog_run(nat.from_netdev, into(reply)).data)
    assert back == {"src": OUTSIDE_IP, "dst": A_IP, "sport": 7, "dport": 7}


@pytest.mark.parametrize(
    "packet",
    [
        pk.tcp(A_IP, B_IP, 40000, 80, pk.TCP_SYN),  # pod to a pod of this node
        pk.udp(A_IP, REMOTE_POD, 40000, 53),  # pod to a pod of another node
        pk.tcp(NODE_IP, OUTSIDE_IP, 40000, 80, pk.TCP_SYN),  # the node's own
        pk.udp("10.244.1.99", OUTSIDE_IP, 40000, 53),  # not a local endpoint
    ],
    ids=["pod-to-local-pod", "pod-to-remote-pod", "node-to-world", "unknown-source"],
)
def test_that_traffic_that_needs_no_masquerade_leaves_untouched(nat, packet):
    frame = out(packet)
    sent = prog_run(nat.to_netdev, frame)
    assert (sent.retval, sent.data) == (TC_ACT_OK, frame)
    assert entries(nat) == {}


def test_that_an_unknown_reply_reaches_the_node_untouched(nat):
    prog_run(nat.to_netdev, out(pk.tcp(A_IP, OUTSIDE_IP, 40000, 80, pk.TCP_SYN)))
    for packet in (
        pk.tcp(OUTSIDE_IP, NODE_IP, 80, 40001, pk.TCP_SYN | pk.TCP_ACK),  # no such mapping
        pk.udp(OUTSIDE_IP, REMOTE_POD, 53, 40000),  # not to the node IP
    ):
        frame = into(packet)
        arrived = prog_run(nat.from_netdev, frame)
        assert (arrived.retval, arrived.data) == (TC_ACT_OK, frame)


def test_that_a_full_port_range_and_an_unsupported_protocol_drop_with_cilium_reasons(pin_dir):
    with load(pin_dir, port_min=61000, port_max=61000) as nat:
        first = prog_run(nat.to_netdev, out(pk.udp(A_IP, OUTSIDE_IP, 40000, 53)))
        assert parsed(first.data)["sport"] == 61000
        # Same destination, another pod port: the one port is taken for it.
        second = prog_run(nat.to_netdev, out(pk.udp(A_IP, OUTSIDE_IP, 40001, 53)))
        assert second.retval == TC_ACT_SHOT
        gre = prog_run(nat.to_netdev, out(pk.ipv4(A_IP, OUTSIDE_IP, 47, b"\0" * 8)))
        assert gre.retval == TC_ACT_SHOT
        with RawMap.from_pin(pin_dir / MAP_METRICS) as raw:
            counters = read_metrics(Map(raw, MetricsKey, MetricsValue))
        assert counters[(DropReason.NAT_NO_MAPPING, Direction.EGRESS)].packets == 1
        assert counters[(DropReason.NAT_UNSUPP_PROTO, Direction.EGRESS)].packets == 1


def test_that_gc_deletes_a_mapping_only_once_both_directions_expired(nat):
    prog_run(nat.to_netdev, out(pk.udp(A_IP, OUTSIDE_IP, 40000, 53)))
    assert len(entries(nat)) == 2
    now = monotonic_seconds()
    assert gc(nat.snat, now=now) == 0
    # The egress entry alone expired: the reply entry keeps the pair (and its port) alive.
    ((key, entry),) = [(k, v) for k, v in nat.snat.items() if k.flags == TupleFlags.OUT]
    entry.lifetime = now - 1
    nat.snat.update(key, entry)
    assert gc(nat.snat, now=now) == 0
    assert gc(nat.snat, now=now + 3600) == 2
    assert entries(nat) == {}


def test_that_gc_deletes_an_expired_orphan_reply_entry(nat):
    prog_run(nat.to_netdev, out(pk.udp(A_IP, OUTSIDE_IP, 40000, 53)))
    egress = [k for k in nat.snat if k.flags == TupleFlags.OUT]
    nat.snat.delete(egress[0])  # as an LRU eviction would
    assert gc(nat.snat, now=monotonic_seconds() + 3600) == 1
    assert list(nat.snat) == []
