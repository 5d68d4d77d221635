"""from-netdev and to-netdev's per-packet service path (bpf/lib/nodeport.h) on crafted packets
(BPF_PROG_TEST_RUN): a NodePort flow to a local backend is DNATed and its reply gets the
frontend back; one to a remote backend is also SNATed to the node and its reply translated
both ways (and the backend's node does not masquerade that reply); a service without backends
answers TCP with RST|ACK and UDP with ICMP port unreachable; a ClusterIP is not served to the
outside; the switches turn it all off."""

from __future__ import annotations

import secrets
import shutil
import struct
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from pylium.datapath.conntrack import Ct4Tuple, CtEntry, TupleFlags, monotonic_seconds
from pylium.datapath.lxc import MAP_CT4, MAP_LXC, EndpointInfo, EndpointKey
from pylium.datapath.maps import Map, RawMap
from pylium.datapath.nat import PORT_MAX, PORT_MIN, NatConfig, NetdevObjects
from pylium.datapath.testrun import prog_run
from pylium.loadbalancer import encoding as enc
from pylium.loadbalancer.model import BackendState, L4Addr
from pylium.paths import BPFFS_ROOT
from tests.datapath.bpf import packets as pk
from tests.datapath.bpf.conftest import A_IP, A
from tests.datapath.bpf.test_nat import GW_MAC, NODE_IP, NODE_MAC, into, out, parsed

pytestmark = pytest.mark.root

TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7
CLIENT_IP, CLUSTER_IP = "203.0.113.1", "10.96.0.9"
REMOTE_POD = "10.244.2.7"
LOCAL_PORT, REMOTE_PORT, EMPTY_PORT = 30080, 30081, 30082
TCP_SYN, TCP_ACK = 0x02, 0x10


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    """/sys/fs/bpf/pylium/lp-<random>, removed afterwards with whatever was pinned in it."""
    path = BPFFS_ROOT / f"lp-{secrets.token_hex(4)}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def nodeport(pin_dir: Path, rev_nat: int, port: int, backend: tuple[int, str] | None) -> None:
    """A NodePort service (wildcard frontend 0.0.0.0:port/TCP and /UDP) with one backend on
    80, or none (then it rejects)."""
    count, flags2 = (1, 0) if backend else (0, enc.SVC_FLAG2_REJECT)
    services, backends = [], []
    for proto in ("TCP", "UDP"):
        addr = L4Addr(IPv4Address("0.0.0.0"), port, proto)
        value = enc.ServiceValue(0, count, rev_nat, enc.SVC_FLAG_NODEPORT, flags2, 0)
        services.append((enc.ServiceKey(addr, 0).encode(), value.encode()))
        if backend:
            be_id = backend[0] + (proto == "UDP")
            be = L4Addr(IPv4Address(backend[1]), 80, proto)
            backends.append(enc.encode_backend(be_id, be, BackendState.ACTIVE))
            slot = enc.ServiceValue(be_id, 0, rev_nat, 0, 0, 0)
            services.append((enc.ServiceKey(addr, 1).encode(), slot.encode()))
    if backends:
        with RawMap.from_pin(pin_dir / "pylium_lb4_backends") as raw:
            raw.update_batch(backends)
    with RawMap.from_pin(pin_dir / "pylium_lb4_services") as raw:
        raw.update_batch(services)


def cluster_ip(pin_dir: Path) -> None:
    addr = L4Addr(IPv4Address(CLUSTER_IP), 80, "TCP")
    with RawMap.from_pin(pin_dir / "pylium_lb4_services") as raw:
        raw.update_batch(
            [(enc.ServiceKey(addr, 0).encode(), enc.ServiceValue(0, 1, 9, 0, 0, 0).encode())]
        )


def load(pin_dir: Path, enabled: bool = True) -> NetdevObjects:
    config = NatConfig(NODE_IP, "10.244.0.0/16", node_port=enabled, external_ips=enabled)
    objs = NetdevObjects.load(config, pin_dir=pin_dir)
    with RawMap.from_pin(pin_dir / MAP_LXC) as raw:
        Map(raw, EndpointKey, EndpointInfo).update(EndpointKey(ip4=A.ip4), A)
    nodeport(pin_dir, 1, LOCAL_PORT, (1, A_IP))
    nodeport(pin_dir, 2, REMOTE_PORT, (3, REMOTE_POD))
    nodeport(pin_dir, 3, EMPTY_PORT, None)
    cluster_ip(pin_dir)
    return objs


@pytest.fixture
def objs(pin_dir: Path) -> Iterator[NetdevObjects]:
    with load(pin_dir) as loaded:
        yield loaded


def syn(dst: str, dport: int) -> bytes:
    return into(pk.tcp(CLIENT_IP, dst, 40000, dport, TCP_SYN))


def test_local_backend_keeps_the_client_and_its_reply_the_frontend(objs: NetdevObjects) -> None:
    run = prog_run(objs.from_netdev, syn(NODE_IP, LOCAL_PORT))
    assert run.retval == TC_ACT_OK  # the stack routes it to the pod's veth
    assert parsed(run.data) == {"src": CLIENT_IP, "dst": A_IP, "sport": 40000, "dport": 80}
    reply = out(pk.tcp(A_IP, CLIENT_IP, 80, 40000, TCP_SYN | TCP_ACK))
    back = prog_run(objs.to_netdev, reply)
    assert back.retval == TC_ACT_OK
    assert parsed(back.data) == {"src": NODE_IP, "dst": CLIENT_IP, "sport": LOCAL_PORT,
                                 "dport": 40000}  # fmt: skip
    # the same flow sticks to its backend; the UDP frontend is a service of its own
    assert parsed(prog_run(objs.from_netdev, syn(NODE_IP, LOCAL_PORT)).data)["dst"] == A_IP
    udp = prog_run(objs.from_netdev, into(pk.udp(CLIENT_IP, NODE_IP, 40001, LOCAL_PORT)))
    assert parsed(udp.data)["dst"] == A_IP


def test_remote_backend_is_source_natted_and_its_reply_translated(objs: NetdevObjects) -> None:
    run = prog_run(objs.from_netdev, syn(NODE_IP, REMOTE_PORT))
    assert run.retval == TC_ACT_REDIRECT  # out again, to the routed next hop
    fwd = parsed(run.data)
    assert (fwd["src"], fwd["dst"], fwd["dport"]) == (NODE_IP, REMOTE_POD, 80)
    assert PORT_MIN <= int(fwd["sport"]) <= PORT_MAX
    reply = into(pk.tcp(REMOTE_POD, NODE_IP, 80, int(fwd["sport"]), TCP_SYN | TCP_ACK))
    back = prog_run(objs.from_netdev, reply)
    assert back.retval == TC_ACT_REDIRECT
    assert parsed(back.data) == {"src": NODE_IP, "dst": CLIENT_IP, "sport": REMOTE_PORT,
                                 "dport": 40000}  # fmt: skip


def test_a_backends_reply_to_a_source_natting_node_is_not_masqueraded(
    objs: NetdevObjects, pin_dir: Path
) -> None:
    """On the backend's node: the SNATed flow came in from another node (to-container tracked
    it inbound), so the pod's reply leaves with the pod's address, unlike its own connections
    to that node."""
    other_node, nat_port = "192.168.64.3", 61234
    inbound = Ct4Tuple.make(other_node, A_IP, nat_port, 80, pk.PROTO_TCP, TupleFlags.IN)
    with RawMap.from_pin(pin_dir / MAP_CT4) as raw:
        Map(raw, Ct4Tuple, CtEntry).update(inbound, CtEntry(lifetime=monotonic_seconds() + 60))
    reply = out(pk.tcp(A_IP, other_node, 80, nat_port, TCP_SYN | TCP_ACK))
    assert prog_run(objs.to_netdev, reply).data == reply
    own = out(pk.tcp(A_IP, other_node, 40000, 4240, TCP_SYN))
    assert parsed(prog_run(objs.to_netdev, own).data)["src"] == NODE_IP


def test_no_backends_answers_tcp_with_a_reset(objs: NetdevObjects) -> None:
    run = prog_run(objs.from_netdev, syn(NODE_IP, EMPTY_PORT))
    assert run.retval == TC_ACT_REDIRECT  # back out where it came from
    assert run.data[:12] == pk.mac(GW_MAC) + pk.mac(NODE_MAC)
    assert parsed(run.data) == {"src": NODE_IP, "dst": CLIENT_IP, "sport": EMPTY_PORT,
                                "dport": 40000}  # fmt: skip
    seq, ack, _, flags = struct.unpack("!IIBB", run.data[14 + 20 + 4 : 14 + 20 + 14])
    assert (seq, ack, flags) == (0, 1001, 0x14)  # RST|ACK of the SYN's seq 1000
    assert len(run.data) == 14 + 40


def test_no_backends_answers_udp_with_port_unreachable(objs: NetdevObjects) -> None:
    datagram = pk.udp(CLIENT_IP, NODE_IP, 40000, EMPTY_PORT)
    run = prog_run(objs.from_netdev, into(datagram))
    assert run.retval == TC_ACT_REDIRECT
    ip = run.data[14:]
    assert ip[9] == pk.PROTO_ICMP and ip[12:20] == pk.ip4(NODE_IP) + pk.ip4(CLIENT_IP)
    assert pk.checksum(ip[:20]) == 0 and pk.checksum(ip[20:]) == 0
    assert ip[20:22] == bytes([3, 3])  # destination unreachable, port unreachable
    assert ip[28:] == datagram[:28]  # the refused datagram's header and first 8 bytes


def test_cluster_ips_and_switched_off_frontends_pass_untouched(pin_dir: Path) -> None:
    with load(pin_dir, enabled=False) as objs:
        packet = syn(NODE_IP, LOCAL_PORT)
        run = prog_run(objs.from_netdev, packet)
        assert (run.retval, run.data) == (TC_ACT_OK, packet)
    with load(pin_dir) as objs:
        packet = syn(CLUSTER_IP, 80)
        run = prog_run(objs.from_netdev, packet)
        assert (run.retval, run.data) == (TC_ACT_OK, packet)
