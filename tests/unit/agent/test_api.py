"""The agent end to end without root: real REST server, stdlib client and sqlite store, fake
netlink. Covers every route of docs/agent-api.md, its error codes and status.ipam."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from pylium.agent.cells import Agent, AgentParams
from pylium.agent.client import AgentClient, AgentError, AgentUnreachable
from pylium.store import Store, open_store
from tests.support import eventually
from tests.unit.endpoint.fakes import FakeDatapath, FakeNetlink
from tests.unit.hubble.test_observer import FakeReader
from tests.unit.routing.test_component import FakeKernel

T = TypeVar("T")
POD = "/var/run/netns/pod-a"
POD_B = "/var/run/netns/pod-b"


def node_object(cidr: str | None) -> dict:
    spec = {"ipam": {"podCIDRs": [cidr]}} if cidr else {}
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNode",
        "metadata": {"name": "n1"},
        "spec": spec,
    }


class Harness:
    def __init__(self, root: Path, store: Store) -> None:
        self.root = root
        self.store = store
        self.nl = FakeNetlink()
        self.nl.add_pod_netns(POD)
        self.nl.add_pod_netns(POD_B)
        self.dp = FakeDatapath()
        self.agent = Agent(
            AgentParams(
                node="n1",
                store_url="unused",
                socket=root / "agent.sock",
                state_dir=root / "state",
                bpf_dir=root / "bpf",
                mtu=1400,
                status_interval=0.02,
            ),
            store=store,
            netlink=self.nl,
            datapath=self.dp,
            open_events=self.open_events,
            route_kernel=FakeKernel(),  # never the root netns's routes
        )
        self.readers: list[FakeReader] = []
        self.client = AgentClient(root / "agent.sock", timeout=5)

    def open_events(self, pin: Path, callback) -> FakeReader:
        self.readers.append(FakeReader(pin, callback))
        return self.readers[-1]

    async def call(self, fn: Callable[..., T], *args, **kw) -> T:
        """Run a blocking client call off the loop that serves it."""
        return await asyncio.to_thread(fn, *args, **kw)

    async def error(self, fn: Callable[..., object], *args, **kw) -> AgentError:
        with pytest.raises(AgentError) as err:
            await self.call(fn, *args, **kw)
        return err.value


@pytest.fixture
async def harness():
    root = Path(tempfile.mkdtemp(prefix="pyl-ta-"))  # short: unix socket paths max 107 bytes
    store = open_store(f"sqlite://{root}/store.db")
    h = Harness(root, store)
    starting = asyncio.create_task(h.agent.start())
    try:
        yield h, starting
    finally:
        if not starting.done():
            starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await h.agent.stop()
        shutil.rmtree(root)


@pytest.fixture
async def ready(harness):
    h, starting = harness
    await h.store.create(node_object("10.244.1.0/29"))
    await starting
    return h


async def test_not_ready_until_the_ciliumnode_has_a_pod_cidr(harness):
    h, starting = harness
    await eventually(lambda: asyncio.to_thread((h.root / "agent.sock").exists))
    err = await h.error(h.client.healthz)
    assert (err.status, err.code) == (503, 11)
    err = await h.error(h.client.create_endpoint, "c1", "eth0", POD)
    assert (err.status, err.code) == (503, 11)
    err = await h.error(h.client.datapath_metrics)
    assert (err.status, err.code) == (503, 11)
    assert (await h.call(h.client.config))["podCIDR"] is None
    assert h.dp.node is None

    await h.store.create(node_object(None))
    await asyncio.sleep(0)
    assert not starting.done()
    obj = await h.store.get("CiliumNode", "", "n1")
    obj["spec"] = {"ipam": {"podCIDRs": ["10.244.1.0/24"]}}
    await h.store.update(obj)
    await asyncio.wait_for(starting, 5)
    health = await h.call(h.client.healthz)
    assert health == {
        "status": "ok",
        "node": "n1",
        "ipam": {"cidr": "10.244.1.0/24", "used": 0, "available": 253},
    }
    assert h.nl.router_ip == "10.244.1.1"
    assert h.dp.node == ("10.244.1.1", "10.244.1.0/24")


async def test_config(ready):
    assert await ready.call(ready.client.config) == {
        "node": "n1",
        "podCIDR": "10.244.1.0/29",
        "routerIP": "10.244.1.1",
        "mtu": 1400,
        "stateDir": str(ready.root / "state"),
    }


async def test_ipam_routes_and_exhaustion(ready):
    c = ready.client
    got = [await ready.call(c.ipam_allocate, f"o{i}") for i in range(5)]
    assert got[0] == {
        "ip": "10.244.1.2",
        "cidr": "10.244.1.0/29",
        "gateway": "10.244.1.1",
        "owner": "o0",
    }
    err = await ready.error(c.ipam_allocate, "o5")
    assert (err.status, err.code) == (503, 11) and "no free address" in err.msg
    await ready.call(c.ipam_release, "10.244.1.4")
    await ready.call(c.ipam_release, "10.244.1.4")  # free already: still 204
    assert (await ready.call(c.ipam_allocate, "again"))["ip"] == "10.244.1.4"
    err = await ready.error(c.ipam_release, "not-an-ip")
    assert (err.status, err.code) == (400, 7)
    err = await ready.error(c.ipam_allocate, "")
    assert (err.status, err.code) == (400, 7)


async def test_endpoint_routes(ready):
    c = ready.client
    ep = await ready.call(
        c.create_endpoint, "c1", "eth0", POD, pod_name="web", pod_namespace="default"
    )
    assert ep["id"] == 1 and ep["state"] == "ready" and ep["mtu"] == 1400
    assert set(ep) == {
        "id", "containerID", "ifname", "netns", "podName", "podNamespace", "ipv4", "gateway",
        "mac", "mtu", "hostIfname", "hostIfindex", "hostMac", "state", "createdAt",
        "sourceTable",
    }  # fmt: skip
    assert (ep["ipv4"], ep["gateway"], ep["podName"]) == ("10.244.1.2", "10.244.1.1", "web")
    assert await ready.call(c.endpoint, 1) == ep
    assert await ready.call(c.endpoints) == [ep]
    assert await ready.call(c.find_endpoint, "c1", "eth0") == ep
    assert await ready.call(c.find_endpoint, "c1", "eth1") is None
    assert (await ready.call(c.check_endpoint, 1, POD))["id"] == 1

    ready.nl.namespaces[POD].by_name["eth0"].addresses.clear()
    err = await ready.error(c.check_endpoint, 1, POD)
    assert err.status == 409 and "address 10.244.1.2/32 is missing" in err.msg

    err = await ready.error(c.create_endpoint, "c2", "eth0", POD)
    assert err.status == 409 and "already exists" in err.msg
    err = await ready.error(c.create_endpoint, "c2", "eth0", "/var/run/netns/nope")
    assert (err.status, err.code) == (404, 3)
    err = await ready.error(c.create_endpoint, "c2", "eth0", POD_B, mtu=10)
    assert (err.status, err.code) == (400, 7)

    b = await ready.call(c.create_endpoint, "c2", "eth0", POD_B)
    removed = await ready.call(c.gc_endpoints, [("c1", "eth0")])
    assert [e["id"] for e in removed] == [b["id"]]
    await ready.call(c.delete_endpoint, 1)
    err = await ready.error(c.endpoint, 1)
    assert (err.status, err.code) == (404, 3)
    err = await ready.error(c.delete_endpoint, 1)
    assert err.status == 404
    await ready.call(c.delete_attachment, "c1", "eth0")  # nothing left: still 204
    assert await ready.call(c.endpoints) == []
    assert (await ready.call(c.healthz))["ipam"]["used"] == 0


async def test_datapath_routes(ready):
    c = ready.client
    ep = await ready.call(c.create_endpoint, "c1", "eth0", POD)
    assert list(ready.dp.rows) == [ep["hostIfname"]]
    assert await ready.call(c.datapath_metrics) == [
        {"reason": 0, "reasonName": "FORWARDED", "direction": "egress", "packets": 1, "bytes": 0}
    ]
    assert await ready.call(c.datapath_conntrack) == [
        {
            "scope": "egress", "proto": 6, "src": ep["ipv4"], "sport": 1, "dst": "10.0.0.1",
            "dport": 80, "expiresIn": 60, "txPackets": 1, "txBytes": 60, "rxPackets": 0,
            "rxBytes": 0, "flags": ["SEEN_REPLY"],
        }
    ]  # fmt: skip
    ready.dp.rows.clear()
    err = await ready.error(c.check_endpoint, ep["id"], POD)
    assert err.status == 409 and f"datapath of {ep['hostIfname']} is missing" in err.msg
    await ready.call(c.delete_attachment, "c1", "eth0")
    assert ready.dp.rows == {}


async def test_stop_stops_the_datapath_and_the_observer(ready):
    (reader,) = ready.readers
    await ready.agent.stop()
    assert ready.dp.node is None and reader.closed


async def test_flows_are_served_from_the_pinned_event_ring(ready):
    (reader,) = ready.readers
    assert reader.pin == ready.root / "bpf" / "pylium_events"
    assert await ready.call(ready.client._call, "GET", "/v1/flows") == []


def raw_put(sock: Path, body: bytes) -> tuple[int, dict]:
    """PUT /v1/endpoints with a body the typed client would never send."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock))
        head = "PUT /v1/endpoints HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        head += f"Content-Length: {len(body)}"
        s.sendall(head.encode() + b"\r\n\r\n" + body)
        answer = b"".join(iter(lambda: s.recv(65536), b""))
    head_bytes, _, payload = answer.partition(b"\r\n\r\n")
    return int(head_bytes.split()[1]), json.loads(payload)


async def test_malformed_bodies_are_invalid_config(ready):
    for body in (b"{nope", b"[]", b'{"containerID": "c", "ifname": "eth0"}'):
        status, err = await asyncio.to_thread(raw_put, ready.root / "agent.sock", body)
        assert (status, err["code"]) == (400, 7), body
        assert set(err) == {"code", "msg", "details"}


async def test_ipam_usage_is_published_in_the_ciliumnode(ready):
    await ready.call(ready.client.create_endpoint, "c1", "eth0", POD)

    async def published():
        obj = await ready.store.get("CiliumNode", "", "n1")
        return (obj.get("status") or {}).get("ipam", {}).get("used")

    assert await eventually(published, timeout=5) == {"10.244.1.2": {"owner": "c1/eth0"}}
    status = (await ready.store.get("CiliumNode", "", "n1"))["status"]["ipam"]
    assert (status["usedCount"], status["available"]) == (1, 4)


async def test_client_reports_an_unreachable_agent(tmp_path):
    client = AgentClient(tmp_path / "missing.sock", timeout=1)
    with pytest.raises(AgentUnreachable) as err:
        client.healthz()
    assert err.value.code == 11


async def test_stop_while_waiting_for_the_pod_cidr_is_clean(harness):
    h, starting = harness
    await eventually(lambda: asyncio.to_thread((h.root / "agent.sock").exists))
    starting.cancel()
    await asyncio.gather(starting, return_exceptions=True)
    await h.agent.stop()
    assert not (h.root / "agent.sock").exists()
