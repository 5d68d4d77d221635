"""Network policy in from-container (egress) and to-container (ingress), run with
BPF_PROG_TEST_RUN: new connections decided by the endpoint's rows in pylium_policy (written by
datapath/policy.py from a computed EndpointPolicy), replies passed by conntrack, Cilium's drop
reasons, verdicts and cookies in events; and the map writer's sync, prune and restart."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from pylium.datapath import policy as policy_module
from pylium.datapath.conntrack import Ct4Tuple, CtStatus, TupleFlags
from pylium.datapath.events import Direction, DropReason, EventType, PolicyVerdict
from pylium.datapath.ipcache import IPCacheKey, IPCacheValue, ipcache_map
from pylium.datapath.lxc import EndpointInfo, LxcObjects
from pylium.datapath.maps import RawMap
from pylium.datapath.policy import AllocatorNumbering, CidrClasses, Cookies, PolicyMaps
from pylium.datapath.testrun import prog_run
from pylium.ipcache import Entry, Source
from pylium.policy import EndpointPolicy, PolicyEntry, PolicyKey, port_range_prefixes
from pylium.policy.rules import Direction as PolicyDirection
from pylium.policy.selector import cidr_class_labels
from tests.datapath.bpf import packets as pk
from tests.datapath.bpf.conftest import (
    A_IP,
    A_MAC,
    A_NODE_MAC,
    B_IP,
    CONFIG,
    OUTSIDE_IP,
    ROUTER_IP,
    A,
    B,
    Events,
)

pytestmark = pytest.mark.root

TC_ACT_OK = 0
TC_ACT_SHOT = 2
TC_ACT_REDIRECT = 7
A_ID, B_ID, OUTSIDE_ID, HOST_ID = 1001, 1002, 2, 1
INGRESS, EGRESS = PolicyDirection.INGRESS, PolicyDirection.EGRESS
ALLOW = PolicyEntry(False, frozenset(["netpol:default/allow spec.ingress[0]"]))
DENY = PolicyEntry(True, frozenset(["cnp:default/deny spec.ingressDeny[0]"]))
# CIDR class identities (placeholders above the cluster range, as the agent numbers them).
ALL_OUT, ALL_IN, ONE_OUT, ONE_IN = 70001, 70002, 70003, 70004
OTHER_WORLD_IP = "198.51.100.7"


@pytest.fixture
def objs(pin_dir: Path) -> Iterator[LxcObjects]:
    """A (identity 1001) and B (1002) registered; the ipcache knows both and the world."""
    with LxcObjects.load(CONFIG, pin_dir=pin_dir) as loaded:
        for info, identity in ((A, A_ID), (B, B_ID)):
            copy = EndpointInfo.from_buffer_copy(bytes(info))
            copy.sec_identity = identity
            loaded.add_endpoint(copy)
        ipcache = ipcache_map(loaded.ipcache)
        for prefix, identity in (
            ("0.0.0.0/0", OUTSIDE_ID),
            (f"{A_IP}/32", A_ID),
            (f"{ROUTER_IP}/32", HOST_ID),
        ):
            e = Entry(IPv4Network(prefix), identity, None, "n1", Source.POD, prefix)
            ipcache.update(IPCacheKey.of(e.prefix), IPCacheValue.of(e))
        e = Entry(IPv4Network(f"{B_IP}/32"), B_ID, None, "n1", Source.POD, "b")
        ipcache.update(IPCacheKey.of(e.prefix), IPCacheValue.of(e))
        yield loaded


@pytest.fixture
def events(objs: LxcObjects) -> Iterator[Events]:
    ev = Events(objs)
    try:
        yield ev
    finally:
        ev.close()


@pytest.fixture
def maps(objs: LxcObjects) -> PolicyMaps:
    return PolicyMaps(objs.policy, objs.policy_ep)


def policy(
    enforced: set[PolicyDirection],
    entries: dict[PolicyKey, PolicyEntry] | None = None,
    audit: bool = False,
) -> EndpointPolicy:
    return EndpointPolicy.from_entries(A_ID, frozenset(enforced), entries or {}, audit)


def from_a(l3: bytes) -> bytes:
    return pk.ethernet(A_MAC, A_NODE_MAC, pk.ETH_P_IP, l3)


def to_a(l3: bytes) -> bytes:
    return pk.ethernet(A_NODE_MAC, A_MAC, pk.ETH_P_IP, l3)


def ct(objs: LxcObjects, src: str, dst: str, sport: int, dport: int, proto: int, f: TupleFlags):
    return objs.ct4.get(Ct4Tuple.make(src, dst, sport, dport, proto, f))


def test_that_an_allowed_new_egress_connection_passes_and_is_tracked(objs, events, maps):
    key = PolicyKey(EGRESS, B_ID, pk.PROTO_UDP, 53, 16)
    maps.sync(101, policy({EGRESS}, {key: ALLOW}))

    res = prog_run(objs.from_container, from_a(pk.udp(A_IP, B_IP, 5000, 53)))

    assert res.retval == TC_ACT_REDIRECT
    assert ct(objs, A_IP, B_IP, 5000, 53, pk.PROTO_UDP, TupleFlags.OUT) is not None
    (ev,) = events.drain()
    assert (ev.type, ev.policy_verdict, ev.dst_identity) == (
        EventType.TRACE,
        PolicyVerdict.ALLOWED,
        B_ID,
    )
    assert isinstance(maps.cookie, Cookies)
    assert maps.cookie.names(ev.policy_cookie) == tuple(ALLOW.rules)


def test_that_a_new_connection_nothing_allows_is_dropped_133_without_ct_entry(objs, events, maps):
    allow_b = PolicyKey(INGRESS, B_ID, pk.PROTO_TCP, 80, 16)
    maps.sync(101, policy({INGRESS}, {allow_b: ALLOW}))

    frame = to_a(pk.tcp(OUTSIDE_IP, A_IP, 40000, 80, pk.TCP_SYN))
    first = prog_run(objs.to_container, frame)
    second = prog_run(objs.to_container, frame)

    assert (first.retval, second.retval) == (TC_ACT_SHOT, TC_ACT_SHOT)
    assert ct(objs, OUTSIDE_IP, A_IP, 40000, 80, pk.PROTO_TCP, TupleFlags.IN) is None
    ev = events.drain()[0]
    assert (ev.type, ev.drop_reason, ev.direction) == (
        EventType.DROP,
        DropReason.POLICY_DENIED,
        Direction.INGRESS,
    )
    assert (ev.policy_verdict, ev.src_identity) == (PolicyVerdict.DENIED, OUTSIDE_ID)
    # B is allowed on the same port: its connection passes.
    res = prog_run(objs.to_container, to_a(pk.tcp(B_IP, A_IP, 40000, 80, pk.TCP_SYN)))
    assert res.retval == TC_ACT_OK


def test_that_a_deny_rule_drops_181_over_an_allow_of_the_peer(objs, events, maps):
    entries = {
        PolicyKey(INGRESS, B_ID, 0, 0, 0): ALLOW,
        PolicyKey(INGRESS, 0, pk.PROTO_TCP, 22, 16): DENY,
    }
    maps.sync(101, policy({INGRESS}, entries))

    denied = prog_run(objs.to_container, to_a(pk.tcp(B_IP, A_IP, 40000, 22, pk.TCP_SYN)))
    allowed = prog_run(objs.to_container, to_a(pk.tcp(B_IP, A_IP, 40001, 23, pk.TCP_SYN)))

    assert (denied.retval, allowed.retval) == (TC_ACT_SHOT, TC_ACT_OK)
    drop, trace = events.drain()
    assert (drop.drop_reason, drop.policy_verdict) == (DropReason.POLICY_DENY, PolicyVerdict.DENIED)
    assert maps.cookie.names(drop.policy_cookie) == tuple(DENY.rules)
    assert maps.cookie.names(trace.policy_cookie) == tuple(ALLOW.rules)


def test_that_the_reply_of_an_allowed_connection_passes_without_a_policy_lookup(objs, events, maps):
    # Both directions enforced; only egress to the world on 443 is allowed.
    entries = {PolicyKey(EGRESS, OUTSIDE_ID, pk.PROTO_TCP, 443, 16): ALLOW}
    maps.sync(101, policy({INGRESS, EGRESS}, entries))

    out = prog_run(objs.from_container, from_a(pk.tcp(A_IP, OUTSIDE_IP, 40000, 443, pk.TCP_SYN)))
    back = prog_run(
        objs.to_container, to_a(pk.tcp(OUTSIDE_IP, A_IP, 443, 40000, pk.TCP_SYN | pk.TCP_ACK))
    )

    assert (out.retval, back.retval) == (TC_ACT_OK, TC_ACT_OK)
    new, reply = events.drain()
    assert (new.ct_status, new.policy_verdict) == (CtStatus.NEW, PolicyVerdict.ALLOWED)
    assert (reply.ct_status, reply.policy_verdict) == (CtStatus.REPLY, PolicyVerdict.NONE)
    # The same packet as a new inbound connection is dropped: ingress allows nothing.
    res = prog_run(objs.to_container, to_a(pk.tcp(OUTSIDE_IP, A_IP, 443, 40001, pk.TCP_SYN)))
    assert res.retval == TC_ACT_SHOT


def test_that_a_port_range_entry_allows_exactly_its_ports(objs, maps):
    entries = {
        PolicyKey(INGRESS, B_ID, pk.PROTO_TCP, port, prefix): ALLOW
        for port, prefix in port_range_prefixes(8080, 8083)
    }
    maps.sync(101, policy({INGRESS}, entries))

    def verdict(port: int) -> int:
        return prog_run(objs.to_container, to_a(pk.tcp(B_IP, A_IP, 40000, port, pk.TCP_SYN))).retval

    assert [verdict(p) for p in (8079, 8080, 8083, 8084)] == [
        TC_ACT_SHOT,
        TC_ACT_OK,
        TC_ACT_OK,
        TC_ACT_SHOT,
    ]


def test_that_audit_mode_passes_what_policy_would_drop_with_an_audit_verdict(objs, events, maps):
    maps.sync(101, policy({INGRESS}, audit=True))

    res = prog_run(objs.to_container, to_a(pk.udp(OUTSIDE_IP, A_IP, 6000, 8080)))

    assert res.retval == TC_ACT_OK
    (ev,) = events.drain()
    assert (ev.type, ev.policy_verdict) == (EventType.TRACE, PolicyVerdict.AUDIT)
    assert ct(objs, OUTSIDE_IP, A_IP, 6000, 8080, pk.PROTO_UDP, TupleFlags.IN) is not None


def test_that_an_unenforced_direction_is_not_looked_up(objs, events, maps):
    maps.sync(101, policy({EGRESS}))

    res = prog_run(objs.to_container, to_a(pk.udp(OUTSIDE_IP, A_IP, 6000, 8080)))

    assert res.retval == TC_ACT_OK
    assert events.drain()[0].policy_verdict == PolicyVerdict.NONE


def test_that_sync_prunes_stale_rows_and_a_restarted_writer_rewrites_nothing(objs, maps):
    wide = {PolicyKey(INGRESS, B_ID, pk.PROTO_TCP, p, 16): ALLOW for p in (80, 81, 82)}
    maps.sync(101, policy({INGRESS}, wide))
    maps.sync(102, policy({EGRESS}))
    narrow = {PolicyKey(INGRESS, B_ID, pk.PROTO_TCP, 80, 16): ALLOW}
    maps.sync(101, policy({INGRESS}, narrow))

    assert len(maps.rows(101)) == 2  # port 80 and the host's allow-localhost row
    assert prog_run(objs.to_container, to_a(pk.tcp(B_IP, A_IP, 1, 81, pk.TCP_SYN))).retval == (
        TC_ACT_SHOT
    )
    # A new writer on the same (pinned) maps reads what is there: the same policy is no write.
    again = PolicyMaps(_reopen(objs.policy), _reopen(objs.policy_ep), maps.cookie)
    assert again.endpoints() == {101, 102}
    assert again.sync(101, policy({INGRESS}, narrow)) == 0
    again.prune([101])
    assert again.endpoints() == {101}


def test_that_sync_rewrites_only_the_peers_whose_entries_changed(objs, maps, monkeypatch):
    """A peer update (`recompute_peers`) shares the other peers' entries: the writer encodes
    and writes the moved peer's rows alone, and the datapath follows."""
    web = {PolicyKey(INGRESS, B_ID, pk.PROTO_TCP, 80, 16): ALLOW}
    others = {PolicyKey(INGRESS, 5000 + i, pk.PROTO_TCP, 80, 16): ALLOW for i in range(50)}
    first = policy({INGRESS}, {**web, **others})
    maps.sync(101, first)
    moved = {**first.by_peer, B_ID: {PolicyKey(INGRESS, B_ID, pk.PROTO_TCP, 81, 16): ALLOW}}
    encoded: list[int] = []
    real = policy_module.encode_rows
    monkeypatch.setattr(
        policy_module, "encode_rows", lambda e, c: encoded.append(len(e)) or real(e, c)
    )

    writes = maps.sync(101, EndpointPolicy(A_ID, frozenset({INGRESS}), moved))

    assert writes == 2  # port 81 in, port 80 out
    assert sorted(encoded) == [1, 1]  # B's rows and the host's allow-localhost row
    syn = {p: to_a(pk.tcp(B_IP, A_IP, 1, p, pk.TCP_SYN)) for p in (80, 81)}
    assert prog_run(objs.to_container, syn[81]).retval == TC_ACT_OK
    assert prog_run(objs.to_container, syn[80]).retval == TC_ACT_SHOT
    assert len(maps.rows(101)) == 52


def _reopen(raw: RawMap) -> RawMap:
    return RawMap(raw.fd, raw.name)


def test_that_the_node_reaches_an_ingress_isolated_pod_unless_a_deny_covers_it(objs, maps):
    maps.sync(101, policy({INGRESS}))

    def from_host(port: int) -> int:
        frame = to_a(pk.tcp(ROUTER_IP, A_IP, 40000 + port, port, pk.TCP_SYN))
        return prog_run(objs.to_container, frame).retval

    assert from_host(80) == TC_ACT_OK
    maps.sync(101, policy({INGRESS}, {PolicyKey(INGRESS, 0, pk.PROTO_TCP, 22, 16): DENY}))
    assert (from_host(81), from_host(22)) == (TC_ACT_OK, TC_ACT_SHOT)
    # Without allow-localhost the host is a peer like any other.
    PolicyMaps(_reopen(objs.policy), _reopen(objs.policy_ep), allow_localhost=False).sync(
        101, policy({INGRESS})
    )
    assert from_host(82) == TC_ACT_SHOT


def test_that_an_ipblock_class_matches_a_pod_address_and_a_cidr_rule_class_does_not(objs, maps):
    # B's address is a rule prefix: pods there use its in-cluster class, the world its outside.
    CidrClasses(objs.policy_cidr).sync({IPv4Network(f"{B_IP}/32"): (ONE_OUT, ONE_IN)})

    def from_b(sport: int) -> int:
        return prog_run(objs.to_container, to_a(pk.tcp(B_IP, A_IP, sport, 80, pk.TCP_SYN))).retval

    maps.sync(101, policy({INGRESS}, {PolicyKey(INGRESS, ONE_IN, 0): ALLOW}))  # ipBlock
    assert from_b(40000) == TC_ACT_OK
    maps.sync(101, policy({INGRESS}, {PolicyKey(INGRESS, ONE_OUT, 0): ALLOW}))  # fromCIDR
    assert from_b(40001) == TC_ACT_SHOT


def test_that_the_longest_cidr_class_decides_and_its_deny_wins(objs, events, maps):
    # fromCIDR 0.0.0.0/0 allows every outside class; ingressDeny fromCIDR OUTSIDE_IP/32.
    classes = CidrClasses(objs.policy_cidr)
    classes.sync(
        {
            IPv4Network("0.0.0.0/0"): (ALL_OUT, ALL_IN),
            IPv4Network(f"{OUTSIDE_IP}/32"): (ONE_OUT, ONE_IN),
        }
    )
    entries = {
        PolicyKey(INGRESS, ALL_OUT, 0): ALLOW,
        PolicyKey(INGRESS, ONE_OUT, 0): DENY,
    }
    maps.sync(101, policy({INGRESS}, entries))

    def verdict(src: str, sport: int = 6000) -> int:
        return prog_run(objs.to_container, to_a(pk.udp(src, A_IP, sport, 53))).retval

    assert (verdict(OTHER_WORLD_IP), verdict(OUTSIDE_IP)) == (TC_ACT_OK, TC_ACT_SHOT)
    allowed, denied = events.drain()
    assert (allowed.policy_verdict, allowed.src_identity) == (PolicyVerdict.ALLOWED, OUTSIDE_ID)
    assert denied.drop_reason == DropReason.POLICY_DENY
    # The /32 gone (its rule deleted), the /0 class holds the address again.
    assert classes.sync({IPv4Network("0.0.0.0/0"): (ALL_OUT, ALL_IN)}) == 1
    assert verdict(OUTSIDE_IP, 6001) == TC_ACT_OK


def test_that_egress_to_a_cidr_class_passes_and_other_world_addresses_drop(objs, maps):
    CidrClasses(objs.policy_cidr).sync({IPv4Network(f"{OUTSIDE_IP}/32"): (ONE_OUT, ONE_IN)})
    maps.sync(101, policy({EGRESS}, {PolicyKey(EGRESS, ONE_OUT, pk.PROTO_TCP, 80, 16): ALLOW}))

    def to(dst: str, port: int) -> int:
        return prog_run(
            objs.from_container, from_a(pk.tcp(A_IP, dst, 40000, port, pk.TCP_SYN))
        ).retval

    assert (to(OUTSIDE_IP, 80), to(OUTSIDE_IP, 81), to(OTHER_WORLD_IP, 80)) == (
        TC_ACT_OK,
        TC_ACT_SHOT,
        TC_ACT_SHOT,
    )


def test_that_an_icmp_rule_allows_its_type_only(objs, maps):
    maps.sync(101, policy({INGRESS}, {PolicyKey(INGRESS, B_ID, pk.PROTO_ICMP, 8, 16): ALLOW}))

    echo = prog_run(objs.to_container, to_a(pk.icmp_echo(B_IP, A_IP, ident=7)))
    timestamp = pk.ipv4(B_IP, A_IP, pk.PROTO_ICMP, bytes([13, 0, 0, 0, 0, 7, 0, 1]) + bytes(12))
    other = prog_run(objs.to_container, to_a(timestamp))

    assert (echo.retval, other.retval) == (TC_ACT_OK, TC_ACT_SHOT)


def test_that_an_sctp_only_policy_still_isolates_tcp_and_udp(objs, maps):
    # The kernel has no SCTP: the rows exist, but they open nothing TCP or UDP can use.
    maps.sync(101, policy({INGRESS}, {PolicyKey(INGRESS, 0, 132, 80, 16): ALLOW}))

    tcp = prog_run(objs.to_container, to_a(pk.tcp(B_IP, A_IP, 40000, 80, pk.TCP_SYN)))
    udp = prog_run(objs.to_container, to_a(pk.udp(B_IP, A_IP, 40000, 80)))

    assert (tcp.retval, udp.retval) == (TC_ACT_SHOT, TC_ACT_SHOT)


def test_that_a_restarted_agent_keeps_the_cidr_class_numbers_its_maps_use(objs):
    # Renumbered anew, a class number could mean another prefix for a moment: a hole.
    wide, one = IPv4Network("10.0.0.0/8"), IPv4Network(f"{OUTSIDE_IP}/32")
    CidrClasses(objs.policy_cidr).sync({wide: (ALL_OUT, ALL_IN), one: (ONE_OUT, ONE_IN)})

    held = CidrClasses(_reopen(objs.policy_cidr)).held()
    numbering = AllocatorNumbering(_NoIdentities())  # type: ignore[arg-type]
    for prefix, numbers in held.items():
        for labels, number in zip(cidr_class_labels(prefix), numbers, strict=True):
            numbering.keep(labels, number)

    assert held == {wide: (ALL_OUT, ALL_IN), one: (ONE_OUT, ONE_IN)}
    assert [numbering.number(labels) for labels in cidr_class_labels(one)] == [ONE_OUT, ONE_IN]
    fresh = cidr_class_labels(IPv4Network("192.0.2.0/24"))[0]
    assert numbering.number(fresh) == ONE_IN + 1


class _NoIdentities:
    """An identity allocator that knows no label set (every number is a placeholder)."""

    def lookup(self, labels: object) -> None:
        return None
