"""Every path of from-container and to-container, run with BPF_PROG_TEST_RUN on crafted
packets: verdict, redirect target, packet rewrites, conntrack entries, metrics and events.
In the style of Cilium's bpf/tests: one case per path, named for what it checks."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import replace

import pytest

from pylium.datapath.conntrack import Ct4Tuple, CtFlags, CtStatus, TupleFlags, monotonic_seconds
from pylium.datapath.events import Direction, DropReason, EventType, TracePoint
from pylium.datapath.lxc import LxcObjects
from pylium.datapath.metrics import Counter, read_metrics
from pylium.datapath.testrun import prog_run
from tests.datapath.bpf import packets as pk
from tests.datapath.bpf.conftest import (
    A_IP,
    A_MAC,
    A_NODE_MAC,
    B_IP,
    B_MAC,
    B_NODE_MAC,
    CONFIG,
    OUTSIDE_IP,
    ROUTER_IP,
    Events,
    load_objects,
)

pytestmark = pytest.mark.root

TC_ACT_OK = 0
TC_ACT_SHOT = 2
TC_ACT_REDIRECT = 7
B_IFINDEX = 4242


def from_a(l3: bytes, ethertype: int = pk.ETH_P_IP) -> bytes:
    """A frame pod A sends to its gateway (the host-side veth MAC)."""
    return pk.ethernet(A_MAC, A_NODE_MAC, ethertype, l3)


def to_a(l3: bytes) -> bytes:
    """A frame the node delivers to pod A."""
    return pk.ethernet(A_NODE_MAC, A_MAC, pk.ETH_P_IP, l3)


def ct_entry(
    objs: LxcObjects, src: str, dst: str, sport: int, dport: int, proto: int, f: TupleFlags
):
    return objs.ct4.get(Ct4Tuple.make(src, dst, sport, dport, proto, f))


def test_that_a_packet_to_a_local_endpoint_is_redirected_to_its_host_veth(objs, events):
    res = prog_run(objs.from_container, from_a(pk.udp(A_IP, B_IP, 5000, 53)))

    assert res.retval == TC_ACT_REDIRECT
    # Routed: MACs of B's veth pair, TTL one lower, header checksum still valid.
    assert res.data[:6] == pk.mac(B_MAC)
    assert res.data[6:12] == pk.mac(B_NODE_MAC)
    assert res.data[14 + 8] == 63
    assert pk.checksum(res.data[14:34]) == 0
    (ev,) = events.drain()
    assert (ev.type, ev.trace_point, ev.ifindex) == (EventType.TRACE, TracePoint.TO_LXC, B_IFINDEX)
    assert (ev.source, ev.direction, ev.ct_status) == (101, Direction.EGRESS, CtStatus.NEW)
    assert (str(ev.saddr), str(ev.daddr), ev.sport, ev.dport) == (A_IP, B_IP, 5000, 53)
    assert read_metrics(objs.metrics) == {
        (DropReason.FORWARDED, Direction.EGRESS): Counter(packets=1, bytes=len(res.data))
    }


def test_that_a_packet_to_outside_the_pod_cidr_goes_to_the_stack(objs, events):
    frame = from_a(pk.tcp(A_IP, OUTSIDE_IP, 40000, 443, pk.TCP_SYN))
    res = prog_run(objs.from_container, frame)

    assert res.retval == TC_ACT_OK
    assert res.data == frame  # untouched: the stack routes it
    (ev,) = events.drain()
    assert (ev.type, ev.trace_point, ev.ifindex) == (EventType.TRACE, TracePoint.TO_STACK, 1)
    assert read_metrics(objs.metrics)[(DropReason.FORWARDED, Direction.EGRESS)].packets == 1


def test_that_a_packet_to_the_router_ip_goes_to_the_stack(objs, events):
    res = prog_run(objs.from_container, from_a(pk.icmp_echo(A_IP, ROUTER_IP, ident=7)))

    assert res.retval == TC_ACT_OK
    assert events.drain()[0].trace_point == TracePoint.TO_STACK


def test_that_a_new_tcp_connection_creates_a_ct_entry_in_syn_state(objs, events):
    before = monotonic_seconds()
    prog_run(objs.from_container, from_a(pk.tcp(A_IP, OUTSIDE_IP, 40000, 443, pk.TCP_SYN)))

    entry = ct_entry(objs, A_IP, OUTSIDE_IP, 40000, 443, pk.PROTO_TCP, TupleFlags.OUT)
    assert entry is not None
    assert (entry.tx_packets, entry.rx_packets) == (1, 0)
    assert entry.tx_flags_seen == pk.TCP_SYN
    assert not entry.flags & CtFlags.SEEN_REPLY
    # Not yet answered: the SYN timeout (60 s), not the established lifetime.
    assert before + 60 <= entry.lifetime <= monotonic_seconds() + 60
    assert events.drain()[0].ct_status == CtStatus.NEW


def test_that_a_second_packet_is_ct_established_and_aggregated_away(objs, events):
    frame = from_a(pk.udp(A_IP, OUTSIDE_IP, 5000, 53))
    prog_run(objs.from_container, frame)
    res = prog_run(objs.from_container, frame)

    assert res.retval == TC_ACT_OK
    entry = ct_entry(objs, A_IP, OUTSIDE_IP, 5000, 53, pk.PROTO_UDP, TupleFlags.OUT)
    assert entry is not None and entry.tx_packets == 2
    # Monitor aggregation: only the new connection is reported, both packets are counted.
    assert [e.ct_status for e in events.drain()] == [CtStatus.NEW]
    assert read_metrics(objs.metrics)[(DropReason.FORWARDED, Direction.EGRESS)].packets == 2


def test_that_without_aggregation_every_forwarded_packet_is_traced(pin_dir):
    with load_objects(pin_dir, replace(CONFIG, monitor_aggregation=0)) as objs:
        ev = Events(objs)
        try:
            frame = from_a(pk.udp(A_IP, OUTSIDE_IP, 5000, 53))
            prog_run(objs.from_container, frame)
            prog_run(objs.from_container, frame)
            assert [e.ct_status for e in ev.drain()] == [CtStatus.NEW, CtStatus.ESTABLISHED]
        finally:
            ev.close()


def test_that_a_reply_to_the_pods_connection_is_ct_reply_at_to_container(objs, events):
    prog_run(objs.from_container, from_a(pk.tcp(A_IP, OUTSIDE_IP, 40000, 443, pk.TCP_SYN)))
    res = prog_run(
        objs.to_container, to_a(pk.tcp(OUTSIDE_IP, A_IP, 443, 40000, pk.TCP_SYN | pk.TCP_ACK))
    )

    assert res.retval == TC_ACT_OK
    entry = ct_entry(objs, A_IP, OUTSIDE_IP, 40000, 443, pk.PROTO_TCP, TupleFlags.OUT)
    assert entry is not None
    assert (entry.tx_packets, entry.rx_packets) == (1, 1)
    assert entry.flags & CtFlags.SEEN_REPLY
    # Answered: the established lifetime (21600 s).
    assert entry.lifetime >= monotonic_seconds() + 21600 - 1
    # No entry of its own in the ingress scope: the reply matched the egress one.
    assert ct_entry(objs, OUTSIDE_IP, A_IP, 443, 40000, pk.PROTO_TCP, TupleFlags.IN) is None
    new, reply = events.drain()
    assert new.ct_status == CtStatus.NEW
    assert (reply.trace_point, reply.direction, reply.ct_status) == (
        TracePoint.TO_LXC,
        Direction.INGRESS,
        CtStatus.REPLY,
    )
    assert read_metrics(objs.metrics)[(DropReason.FORWARDED, Direction.INGRESS)].packets == 1


def test_that_a_pods_answer_to_an_inbound_connection_is_ct_reply_at_from_container(objs, events):
    prog_run(objs.to_container, to_a(pk.udp(OUTSIDE_IP, A_IP, 6000, 8080)))
    assert ct_entry(objs, OUTSIDE_IP, A_IP, 6000, 8080, pk.PROTO_UDP, TupleFlags.IN) is not None

    res = prog_run(objs.from_container, from_a(pk.udp(A_IP, OUTSIDE_IP, 8080, 6000)))

    assert res.retval == TC_ACT_OK
    inbound = ct_entry(objs, OUTSIDE_IP, A_IP, 6000, 8080, pk.PROTO_UDP, TupleFlags.IN)
    assert inbound is not None and inbound.rx_packets == 1
    assert ct_entry(objs, A_IP, OUTSIDE_IP, 8080, 6000, pk.PROTO_UDP, TupleFlags.OUT) is None
    assert [e.ct_status for e in events.drain()] == [CtStatus.NEW, CtStatus.REPLY]


def test_that_an_icmp_echo_reply_matches_the_requests_ct_entry_by_identifier(objs, events):
    prog_run(objs.from_container, from_a(pk.icmp_echo(A_IP, OUTSIDE_IP, ident=0x1234)))
    prog_run(objs.to_container, to_a(pk.icmp_echo(OUTSIDE_IP, A_IP, ident=0x1234, reply=True)))

    entry = ct_entry(objs, A_IP, OUTSIDE_IP, 0x1234, 0x1234, pk.PROTO_ICMP, TupleFlags.OUT)
    assert entry is not None and (entry.tx_packets, entry.rx_packets) == (1, 1)
    assert [e.ct_status for e in events.drain()] == [CtStatus.NEW, CtStatus.REPLY]


@pytest.mark.parametrize("closing", ["fin", "rst"])
def test_that_a_closed_tcp_connection_gets_the_close_timeout(objs, closing):
    prog_run(objs.from_container, from_a(pk.tcp(A_IP, OUTSIDE_IP, 40000, 443, pk.TCP_SYN)))
    prog_run(objs.to_container, to_a(pk.tcp(OUTSIDE_IP, A_IP, 443, 40000, pk.TCP_SYN | pk.TCP_ACK)))
    if closing == "fin":
        prog_run(objs.from_container, from_a(pk.tcp(A_IP, OUTSIDE_IP, 40000, 443, pk.TCP_FIN)))
        prog_run(objs.to_container, to_a(pk.tcp(OUTSIDE_IP, A_IP, 443, 40000, pk.TCP_FIN)))
    else:
        prog_run(objs.to_container, to_a(pk.tcp(OUTSIDE_IP, A_IP, 443, 40000, pk.TCP_RST)))

    entry = ct_entry(objs, A_IP, OUTSIDE_IP, 40000, 443, pk.PROTO_TCP, TupleFlags.OUT)
    assert entry is not None
    expected = CtFlags.TX_CLOSING | CtFlags.RX_CLOSING if closing == "fin" else CtFlags.RESET
    assert entry.flags & expected == expected
    assert entry.lifetime <= monotonic_seconds() + 10


def test_that_a_spoofed_source_address_is_dropped_with_invalid_source_ip(objs, events):
    res = prog_run(objs.from_container, from_a(pk.udp("10.244.1.99", OUTSIDE_IP, 5000, 53)))

    assert res.retval == TC_ACT_SHOT
    (ev,) = events.drain()
    assert (ev.type, ev.drop_reason, ev.source) == (EventType.DROP, DropReason.INVALID_SIP, 101)
    assert int(DropReason.INVALID_SIP) == 132  # Cilium's "Invalid source ip"
    assert str(ev.saddr) == "10.244.1.99"
    assert list(objs.ct4) == []
    assert read_metrics(objs.metrics) == {
        (DropReason.INVALID_SIP, Direction.EGRESS): Counter(packets=1, bytes=len(res.data))
    }


def test_that_an_unknown_destination_in_the_pod_cidr_is_dropped(objs, events):
    res = prog_run(objs.from_container, from_a(pk.udp(A_IP, "10.244.1.77", 5000, 53)))

    assert res.retval == TC_ACT_SHOT
    ev = events.drain()[-1]
    assert (ev.type, ev.drop_reason, str(ev.daddr)) == (
        EventType.DROP,
        DropReason.NO_LXC,
        "10.244.1.77",
    )
    assert read_metrics(objs.metrics)[(DropReason.NO_LXC, Direction.EGRESS)].packets == 1


def test_that_ipv6_is_dropped_as_unsupported_l3(objs, events):
    res = prog_run(objs.from_container, from_a(b"\x60" + b"\0" * 39, pk.ETH_P_IPV6))

    assert res.retval == TC_ACT_SHOT
    assert events.drain()[0].drop_reason == DropReason.UNKNOWN_L3


def test_that_to_container_drops_a_packet_not_addressed_to_its_endpoint(objs, events):
    res = prog_run(objs.to_container, to_a(pk.udp(OUTSIDE_IP, B_IP, 5000, 53)))

    assert res.retval == TC_ACT_SHOT
    ev = events.drain()[0]
    assert (ev.drop_reason, ev.direction) == (DropReason.NO_LXC, Direction.INGRESS)


def test_that_an_arp_request_for_the_router_ip_is_answered_with_the_host_veth_mac(objs, events):
    res = prog_run(objs.from_container, pk.arp_request(A_MAC, A_IP, ROUTER_IP))

    # Sent back out of the veth it came from: pod A receives the answer.
    assert res.retval == TC_ACT_REDIRECT
    assert pk.parse_arp(res.data) == {
        "eth_dst": A_MAC,
        "eth_src": A_NODE_MAC,
        "ethertype": pk.ETH_P_ARP,
        "op": 2,
        "sha": A_NODE_MAC,
        "spa": ROUTER_IP,
        "tha": A_MAC,
        "tpa": A_IP,
    }
    (ev,) = events.drain()
    assert (ev.trace_point, ev.ifindex) == (TracePoint.TO_LXC, 1)


def test_that_an_arp_request_for_another_address_goes_to_the_stack_unchanged(objs):
    frame = pk.arp_request(A_MAC, A_IP, "10.244.1.55")
    res = prog_run(objs.from_container, frame)

    assert (res.retval, res.data) == (TC_ACT_OK, frame)


def test_that_a_packet_from_an_unregistered_interface_is_dropped(objs, events):
    objs.lxc_if.delete(objs.lxc_if.key_type(ifindex=1))
    res = prog_run(objs.from_container, from_a(pk.udp(A_IP, OUTSIDE_IP, 5000, 53)))

    assert res.retval == TC_ACT_SHOT
    assert events.drain()[0].drop_reason == DropReason.INVALID_SIP


def test_that_a_truncated_l4_header_is_dropped_as_invalid(objs, events):
    # The IP header is whole, the UDP header stops after 4 of its 8 bytes.
    res = prog_run(objs.from_container, from_a(pk.udp(A_IP, OUTSIDE_IP, 5000, 53)[:24]))

    assert res.retval == TC_ACT_SHOT
    assert events.drain()[0].drop_reason == DropReason.INVALID


def test_that_the_event_addresses_are_network_order(objs, events):
    prog_run(objs.from_container, from_a(pk.udp(A_IP, B_IP, 1, 2)))
    ev = events.drain()[0]
    assert ev.saddr == ipaddress.IPv4Address(A_IP)
    assert struct.pack("!H", ev.dport) == b"\x00\x02"


def test_that_repeated_runs_count_every_packet_and_report_a_duration(objs):
    res = prog_run(objs.from_container, from_a(pk.udp(A_IP, OUTSIDE_IP, 5000, 53)), repeat=50)

    assert res.retval == TC_ACT_OK
    assert res.duration_ns > 0
    entry = ct_entry(objs, A_IP, OUTSIDE_IP, 5000, 53, pk.PROTO_UDP, TupleFlags.OUT)
    assert entry is not None and entry.tx_packets == 50
    assert read_metrics(objs.metrics)[(DropReason.FORWARDED, Direction.EGRESS)].packets == 50
