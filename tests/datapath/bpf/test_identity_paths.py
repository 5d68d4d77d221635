"""Identities in the endpoint programs and tunnel encapsulation, run with BPF_PROG_TEST_RUN:
the identities events carry (own endpoint, ipcache, longest prefix), the encap path's redirect
into the VXLAN device, the drop of an identity that must not go on the wire; and the ipcache
map reconciler against a real LPM map."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from pylium.datapath.events import Direction, DropReason, EventType, TracePoint
from pylium.datapath.ipcache import (
    IPCacheKey,
    IPCacheMapReconciler,
    IPCacheValue,
    ipcache_map,
    read_ipcache,
)
from pylium.datapath.links import Direction as Hook
from pylium.datapath.lxc import EndpointInfo, LxcObjects
from pylium.datapath.overlay import Overlay
from pylium.datapath.testrun import prog_run
from pylium.ipcache import Entry, IPCacheTable, Source, decode_value, lpm_value
from pylium.paths import BPFFS_ROOT
from tests.datapath.bpf import packets as pk
from tests.datapath.bpf.conftest import (
    A_IP,
    A_MAC,
    A_NODE_MAC,
    B_IP,
    CONFIG,
    A,
    B,
    Events,
)

pytestmark = pytest.mark.root

TC_ACT_OK = 0
TC_ACT_SHOT = 2
TC_ACT_REDIRECT = 7
VXLAN_IFINDEX = 77
A_ID, B_ID, REMOTE_ID = 1001, 1002, 4242
REMOTE_IP, REMOTE_NODE = "10.244.2.9", "192.168.64.3"
OTHER_CIDR = "10.244.2.0/24"


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    """/sys/fs/bpf/pylium/tt-<random>, removed afterwards with whatever was pinned in it."""
    path = BPFFS_ROOT / f"tt-{secrets.token_hex(4)}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def entry(prefix: str, identity: int, tunnel: str | None = None) -> Entry:
    return Entry(
        IPv4Network(prefix),
        identity,
        IPv4Address(tunnel) if tunnel else None,
        "node2" if tunnel else "node1",
        Source.POD,
        f"owner/{prefix}",
    )


def load(pin_dir: Path, tunnel_ifindex: int) -> LxcObjects:
    objs = LxcObjects.load(replace(CONFIG, tunnel_ifindex=tunnel_ifindex), pin_dir=pin_dir)
    a, b = (EndpointInfo.from_buffer_copy(bytes(x)) for x in (A, B))
    a.sec_identity, b.sec_identity = A_ID, B_ID
    objs.add_endpoint(a)
    objs.add_endpoint(b)
    ipcache = ipcache_map(objs.ipcache)
    for e in (
        entry("0.0.0.0/0", 2),
        entry(f"{A_IP}/32", A_ID),
        entry(f"{B_IP}/32", B_ID),
        entry(f"{REMOTE_IP}/32", REMOTE_ID, REMOTE_NODE),
        entry(OTHER_CIDR, 2, REMOTE_NODE),
    ):
        ipcache.update(IPCacheKey.of(e.prefix), IPCacheValue.of(e))
    return objs


@pytest.fixture(params=[VXLAN_IFINDEX, 0], ids=["tunnel", "native"])
def objs(request: pytest.FixtureRequest, pin_dir: Path) -> Iterator[LxcObjects]:
    with load(pin_dir, request.param) as loaded:
        yield loaded


@pytest.fixture
def tunnel_objs(pin_dir: Path) -> Iterator[LxcObjects]:
    with load(pin_dir, VXLAN_IFINDEX) as loaded:
        yield loaded


@pytest.fixture
def events(objs: LxcObjects) -> Iterator[Events]:
    ev = Events(objs)
    try:
        yield ev
    finally:
        ev.close()


def from_a(l3: bytes) -> bytes:
    return pk.ethernet(A_MAC, A_NODE_MAC, pk.ETH_P_IP, l3)


def to_a(l3: bytes) -> bytes:
    return pk.ethernet(A_NODE_MAC, A_MAC, pk.ETH_P_IP, l3)


def from_node(l3: bytes) -> bytes:
    """A frame the node's stack routes into the VXLAN device (ARP off: its own MAC)."""
    return pk.ethernet(A_NODE_MAC, A_NODE_MAC, pk.ETH_P_IP, l3)


def test_that_a_local_delivery_reports_both_endpoints_identities_and_tcp_flags(objs, events):
    res = prog_run(objs.from_container, from_a(pk.tcp(A_IP, B_IP, 40000, 80, pk.TCP_SYN)))

    assert res.retval == TC_ACT_REDIRECT
    (ev,) = events.drain()
    assert (ev.trace_point, ev.src_identity, ev.dst_identity) == (TracePoint.TO_LXC, A_ID, B_ID)
    assert ev.tcp_flags == pk.TCP_SYN


def test_that_a_remote_pod_in_tunnel_mode_is_redirected_into_the_vxlan_device(
    tunnel_objs: LxcObjects,
):
    ev = Events(tunnel_objs)
    try:
        frame = from_a(pk.udp(A_IP, REMOTE_IP, 5000, 53))
        res = prog_run(tunnel_objs.from_container, frame)

        assert res.retval == TC_ACT_REDIRECT
        assert res.data == frame  # the VXLAN device encapsulates the frame as it is
        (trace,) = ev.drain()
        assert (trace.type, trace.trace_point, trace.ifindex) == (
            EventType.TRACE,
            TracePoint.TO_OVERLAY,
            VXLAN_IFINDEX,
        )
        assert (trace.src_identity, trace.dst_identity) == (A_ID, REMOTE_ID)
        # A pod of the remote node the ipcache has no /32 for yet: its node's pod CIDR.
        res = prog_run(tunnel_objs.from_container, from_a(pk.udp(A_IP, "10.244.2.77", 5000, 53)))
        assert res.retval == TC_ACT_REDIRECT
        assert ev.drain()[0].dst_identity == 2
    finally:
        ev.close()


def test_that_a_remote_pod_in_native_mode_goes_to_the_stack_with_its_identity(pin_dir):
    with load(pin_dir, 0) as objs:
        ev = Events(objs)
        try:
            res = prog_run(objs.from_container, from_a(pk.udp(A_IP, REMOTE_IP, 5000, 53)))
            assert res.retval == TC_ACT_OK
            (trace,) = ev.drain()
            assert trace.trace_point == TracePoint.TO_STACK
            assert (trace.src_identity, trace.dst_identity) == (A_ID, REMOTE_ID)
        finally:
            ev.close()


def test_that_a_node_local_identity_never_goes_into_the_tunnel(tunnel_objs: LxcObjects):
    local = EndpointInfo.from_buffer_copy(bytes(A))
    local.sec_identity = (1 << 24) | 5
    tunnel_objs.add_endpoint(local)
    ev = Events(tunnel_objs)
    try:
        res = prog_run(tunnel_objs.from_container, from_a(pk.udp(A_IP, REMOTE_IP, 5000, 53)))
        assert res.retval == TC_ACT_SHOT
        (drop,) = ev.drain()
        assert (drop.type, drop.drop_reason) == (EventType.DROP, DropReason.INVALID_IDENTITY)
    finally:
        ev.close()


def test_that_to_container_takes_the_source_identity_from_the_ipcache(objs, events):
    res = prog_run(objs.to_container, to_a(pk.udp(REMOTE_IP, A_IP, 53, 5000)))
    res2 = prog_run(objs.to_container, to_a(pk.udp("203.0.113.5", A_IP, 53, 5001)))

    assert (res.retval, res2.retval) == (TC_ACT_OK, TC_ACT_OK)
    remote, world = events.drain()
    assert (remote.direction, remote.src_identity, remote.dst_identity) == (
        Direction.INGRESS,
        REMOTE_ID,
        A_ID,
    )
    assert world.src_identity == 2  # 0.0.0.0/0


class FakeIPCache:
    """The part of IPCache the map reconciler uses: a table and the sync signal."""

    def __init__(self) -> None:
        self.table = IPCacheTable()
        self.synced = asyncio.Event()

    async def wait_synced(self) -> None:
        await self.synced.wait()


async def test_that_the_ipcache_map_follows_the_table_and_prunes_only_after_sync(pin_dir):
    with LxcObjects.load(CONFIG, pin_dir=pin_dir) as objs:
        raw = ipcache_map(objs.ipcache)
        stale = entry("10.9.9.9/32", 77)
        raw.update(IPCacheKey.of(stale.prefix), IPCacheValue.of(stale))
        ipcache = FakeIPCache()
        pod = entry(f"{REMOTE_IP}/32", REMOTE_ID, REMOTE_NODE)
        ipcache.table.set_owner(pod.owner, [pod])
        reconciler = IPCacheMapReconciler(ipcache, objs.ipcache)  # type: ignore[arg-type]
        task = asyncio.create_task(reconciler.run())
        try:
            await asyncio.sleep(0.05)
            # Not synced: nothing written, nothing (an earlier agent's entry) deleted.
            assert set(read_ipcache(objs.ipcache)) == {stale.prefix}

            ipcache.synced.set()

            def kernel() -> dict[IPv4Network, bytes]:
                return read_ipcache(objs.ipcache)

            async def until(want: dict[IPv4Network, bytes]) -> None:
                for _ in range(200):
                    if kernel() == want:
                        return
                    await asyncio.sleep(0.01)
                assert kernel() == want

            await until({pod.prefix: lpm_value(pod)})
            assert decode_value(kernel()[pod.prefix]).tunnel_endpoint == IPv4Address(REMOTE_NODE)

            relabelled = replace(pod, identity=REMOTE_ID + 1)
            world = entry("0.0.0.0/0", 2)
            ipcache.table.set_owner(pod.owner, [relabelled])
            ipcache.table.set_owner(world.owner, [world])
            await until({pod.prefix: lpm_value(relabelled), world.prefix: lpm_value(world)})

            ipcache.table.set_owner(pod.owner, [])
            await until({world.prefix: lpm_value(world)})
            assert reconciler.applied == {world.prefix: world}
            assert reconciler.revision == ipcache.table.revision
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


def test_that_to_overlay_keys_the_nodes_own_traffic_and_drops_what_has_no_tunnel(
    tunnel_objs: LxcObjects, pin_dir: Path
):
    overlay = Overlay.load(replace(CONFIG, tunnel_ifindex=VXLAN_IFINDEX), pin_dir)
    ev = Events(tunnel_objs)
    try:
        to_overlay = overlay.programs[Hook.EGRESS]
        node = from_node(pk.udp("10.244.1.1", REMOTE_IP, 1, 2))
        assert prog_run(to_overlay, node).retval == TC_ACT_OK
        assert ev.drain() == []  # keyed (to the remote node, as remote-node) and on its way
        world = from_node(pk.udp("10.244.1.1", "203.0.113.5", 1, 2))
        assert prog_run(to_overlay, world).retval == TC_ACT_SHOT
        (drop,) = ev.drain()
        assert drop.drop_reason == DropReason.NO_TUNNEL_ENDPOINT
        assert drop.src_identity == 6
        # Ingress without a tunnel key (never from the VXLAN device itself) is refused too.
        from_overlay = overlay.programs[Hook.INGRESS]
        assert prog_run(from_overlay, to_a(pk.udp(REMOTE_IP, A_IP, 2, 1))).retval == TC_ACT_SHOT
        assert ev.drain()[0].drop_reason == DropReason.NO_TUNNEL_ENDPOINT
    finally:
        ev.close()
        overlay.close()
