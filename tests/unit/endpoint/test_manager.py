"""Endpoint manager over the fake netlink and datapath: ADD/DEL/CHECK/GC, roll-back, restart
recovery and datapath reconciliation."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest

from pylium.datapath.netlink import Route, Rule
from pylium.endpoint import (
    CheckFailed,
    EndpointManager,
    EndpointNotFound,
    EndpointParams,
    EndpointRequest,
    InterfaceExists,
    NetnsMissing,
)
from pylium.endpoint.model import host_ifname
from pylium.endpoint.plumbing import datapath_row
from pylium.ipam import ClusterPoolAllocator
from tests.unit.endpoint.fakes import FakeDatapath, FakeNetlink, InjectedFailure

POD = "/var/run/netns/pod-a"
POD_B = "/var/run/netns/pod-b"


class Env:
    """One node: fake kernel, state dir, IPAM and manager; restart() builds a fresh manager."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.nl = FakeNetlink()
        self.nl.add_pod_netns(POD)
        self.nl.add_pod_netns(POD_B)
        self.dp = FakeDatapath()
        self.steps: list[str] = []
        self.raise_at: str | None = None
        self.manager, self.ipam = self._build()

    def _on_step(self, step: str) -> None:
        self.steps.append(step)
        if step == self.raise_at:
            raise InjectedFailure(step)

    def _build(self) -> tuple[EndpointManager, ClusterPoolAllocator]:
        ipam = ClusterPoolAllocator("10.244.1.0/24", self.tmp / "ipam.json")
        ipam.load()
        params = EndpointParams(
            state_dir=self.tmp,
            delete_queue_dir=self.tmp / "delete-queue",
            mtu=1450,
            ipam_gc_grace=0.0,
            on_step=self._on_step,
        )
        return EndpointManager(params, self.nl, ipam, self.dp), ipam

    async def restart(self) -> None:
        await self.manager.stop()
        self.manager, self.ipam = self._build()
        await self.manager.start()

    def state_files(self) -> list[str]:
        return sorted(p.name for p in (self.tmp / "endpoints").iterdir())

    def node_links(self) -> list[str]:
        return sorted(self.nl.node.by_name)

    async def assert_clean(self) -> None:
        """Nothing leaked: no route, address, state file or datapath row at once; no veth or
        pod interface once the background veth deletions are done."""
        assert self.nl.node.route_table == []
        assert self.ipam.used() == {}
        assert self.state_files() == []
        assert self.dp.rows == {}
        await self.manager.unplumbed()
        assert self.node_links() == ["lo"]
        assert sorted(self.nl.namespaces[POD].by_name) == ["lo"]


@pytest.fixture
async def env(tmp_path):
    e = Env(tmp_path)
    await e.manager.start()
    yield e
    await e.manager.stop()


def req(container: str = "c1", netns: str = POD, ifname: str = "eth0", **kw) -> EndpointRequest:
    return EndpointRequest(container_id=container, ifname=ifname, netns=netns, **kw)


async def test_create_plumbs_pod_and_host_side(env):
    """ADD: /32 on the pod interface, on-link gateway and default routes, host veth + route."""
    ep = await env.manager.create(req(pod_name="web", mac="02:aa:bb:cc:dd:ee"))
    assert (ep.id, ep.state, ep.ipv4, ep.gateway, ep.mtu) == (
        1,
        "ready",
        "10.244.1.2",
        "10.244.1.1",
        1450,
    )
    assert ep.host_ifname == host_ifname("c1", "eth0") and len(ep.host_ifname) == 14
    pod = env.nl.namespaces[POD]
    eth0 = pod.by_name["eth0"]
    assert (eth0.up, eth0.mtu, eth0.mac, eth0.addresses) == (
        True,
        1450,
        "02:aa:bb:cc:dd:ee",
        ["10.244.1.2/32"],
    )
    assert pod.by_name["lo"].up
    assert pod.route_table == [
        Route("10.244.1.1/32", "eth0", scope="link"),
        Route("0.0.0.0/0", "eth0", gateway="10.244.1.1"),
    ]
    host = env.nl.node.by_name[ep.host_ifname]
    assert (host.up, host.index, host.mac) == (True, ep.host_ifindex, ep.host_mac)
    assert env.nl.node.route_table == [Route("10.244.1.2/32", ep.host_ifname)]
    assert env.ipam.used() == {"10.244.1.2": "c1/eth0"}
    saved = json.loads((env.tmp / "endpoints" / "1.json").read_text())
    assert saved["state"] == "ready" and saved["ipv4"] == "10.244.1.2"
    assert env.steps == [
        "state-written",
        "ip-allocated",
        "veth-created",
        "pod-configured",
        "datapath-configured",
        "host-configured",
        "ready",
    ]
    assert env.dp.rows == {ep.host_ifname: datapath_row(ep)}
    assert datapath_row(ep).host_mac == ep.host_mac and datapath_row(ep).mac == ep.mac


async def test_add_fails_when_the_ifname_exists_and_leaves_it_alone(env):
    first = await env.manager.create(req("c1"))
    with pytest.raises(InterfaceExists):
        await env.manager.create(req("c2"))
    assert env.nl.namespaces[POD].by_name["eth0"].addresses == ["10.244.1.2/32"]
    assert [e.id for e in env.manager.endpoints()] == [first.id]
    assert env.ipam.used() == {"10.244.1.2": "c1/eth0"}
    assert env.node_links() == ["lo", first.host_ifname]
    assert env.state_files() == ["1.json"]


async def test_add_into_a_missing_netns_fails_cleanly(env):
    with pytest.raises(NetnsMissing):
        await env.manager.create(req(netns="/var/run/netns/gone"))
    await env.assert_clean()


@pytest.mark.parametrize(
    "operation", ["netns", "link", "add_veth", "set_link", "add_address", "add_route"]
)
async def test_a_failing_netlink_call_rolls_everything_back(env, operation):
    env.nl.fail_on(operation)
    with pytest.raises(InjectedFailure):
        await env.manager.create(req())
    await env.assert_clean()
    assert env.manager.endpoints() == []


@pytest.mark.parametrize(
    "step",
    [
        "state-written",
        "ip-allocated",
        "veth-created",
        "pod-configured",
        "datapath-configured",
        "host-configured",
        "ready",
    ],
)
async def test_a_failure_after_any_step_rolls_everything_back(env, step):
    env.raise_at = step
    with pytest.raises(InjectedFailure):
        await env.manager.create(req())
    await env.assert_clean()
    env.raise_at = None
    ep = await env.manager.create(req())  # and the next ADD of the same attachment works
    assert ep.state == "ready"


async def test_a_failing_datapath_update_rolls_everything_back(env):
    env.dp.fail_on("update")
    with pytest.raises(InjectedFailure):
        await env.manager.create(req())
    await env.assert_clean()
    assert "datapath-configured" not in env.steps


async def test_delete_is_idempotent_and_needs_no_netns(env):
    ep = await env.manager.create(req())
    env.nl.remove_pod_netns(POD)
    assert (await env.manager.delete_attachment("c1", "eth0")).id == ep.id
    assert await env.manager.delete_attachment("c1", "eth0") is None
    assert await env.manager.delete_attachment("never", "eth0") is None
    assert env.ipam.used() == {} and env.state_files() == []
    await env.manager.unplumbed()
    assert env.node_links() == ["lo"]
    with pytest.raises(EndpointNotFound):
        await env.manager.delete(ep.id)


async def test_del_returns_released_and_the_veth_goes_in_the_background(env):
    ep = await env.manager.create(req())
    assert await env.manager.delete_attachment("c1", "eth0") is not None
    # returned: address, host route, state and datapath are gone
    assert env.ipam.used() == {} and env.nl.node.route_table == [] and env.state_files() == []
    assert env.dp.rows == {}
    # an ADD of the same attachment (same host ifname, same pod ifname) waits for it
    again = await env.manager.create(req())
    assert again.state == "ready" and env.node_links() == ["lo", ep.host_ifname]
    await env.manager.delete_attachment("c1", "eth0")
    await env.manager.stop()  # waits for the deletion too
    assert env.node_links() == ["lo"]


async def test_delete_by_id_removes_everything(env):
    ep = await env.manager.create(req())
    await env.manager.delete(ep.id)
    await env.assert_clean()


async def test_check_names_what_is_missing(env):
    ep = await env.manager.create(req())
    assert (await env.manager.check(ep.id, POD)).id == ep.id
    env.nl.namespaces[POD].by_name["eth0"].addresses.clear()
    with pytest.raises(CheckFailed) as err:
        await env.manager.check(ep.id, POD)
    assert err.value.problems == [f"address 10.244.1.2/32 is missing on eth0 in {POD}"]
    env.ipam.release("10.244.1.2")
    env.nl.node.route_table.clear()
    with pytest.raises(CheckFailed) as err:
        await env.manager.check(ep.id)
    assert err.value.problems[0] == "IPAM holds no reservation of 10.244.1.2 for c1/eth0"
    assert f"host route 10.244.1.2/32 dev {ep.host_ifname} is missing" in err.value.problems


async def test_check_names_a_missing_datapath(env):
    ep = await env.manager.create(req())
    env.dp.rows.clear()
    with pytest.raises(CheckFailed) as err:
        await env.manager.check(ep.id, POD)
    assert err.value.problems == [f"datapath of {ep.host_ifname} is missing"]


async def test_check_tolerates_a_changed_mac_and_extra_routes(env):
    ep = await env.manager.create(req())
    pod = env.nl.namespaces[POD]
    pod.by_name["eth0"].mac = "02:12:34:56:78:9a"
    pod.route_table.append(Route("192.168.0.0/16", "eth0", gateway="10.244.1.1"))
    await env.manager.check(ep.id, POD)


async def test_a_second_interface_routes_by_source_in_a_table_of_its_own(env):
    """eth1 after eth0: the gateway is on-link through eth0, so eth1's routes go to table
    1000 + its id, selected by a rule for its address; CHECK verifies them; DEL of eth1 removes
    the rule and leaves eth0's routes."""
    eth0 = await env.manager.create(req())
    eth1 = await env.manager.create(req(ifname="eth1"))
    assert (eth0.source_table, eth1.source_table) == (0, 1000 + eth1.id)
    pod = env.nl.namespaces[POD]
    main = [
        Route("10.244.1.1/32", "eth0", scope="link"),
        Route("0.0.0.0/0", "eth0", gateway="10.244.1.1"),
    ]
    table = eth1.source_table
    assert pod.route_table == [
        *main,
        Route("10.244.1.1/32", "eth1", scope="link", table=table),
        Route("0.0.0.0/0", "eth1", gateway="10.244.1.1", table=table),
    ]
    assert pod.rule_list == [Rule("10.244.1.3/32", table, 1000)]
    await env.manager.check(eth1.id, POD)
    pod.rule_list.clear()
    with pytest.raises(CheckFailed) as err:
        await env.manager.check(eth1.id, POD)
    assert err.value.problems == [f"rule from 10.244.1.3/32 lookup {table} is missing in {POD}"]
    await pod.add_rule(Rule("10.244.1.3/32", table, 1000))
    await env.manager.delete(eth1.id)
    await env.manager.unplumbed()
    assert (pod.route_table, pod.rule_list) == (main, [])
    await env.manager.check(eth0.id, POD)


async def test_ids_are_numeric_and_reused_only_after_release(env):
    a = await env.manager.create(req("a", POD))
    b = await env.manager.create(req("b", POD_B))
    assert (a.id, b.id) == (1, 2)
    await env.manager.delete(a.id)
    c = await env.manager.create(req("c", POD))
    assert c.id == 3


async def test_repeated_add_of_one_attachment_replaces_it(env):
    first = await env.manager.create(req())
    second = await env.manager.create(req())
    assert [e.id for e in env.manager.endpoints()] == [second.id] != [first.id]
    assert env.ipam.used() == {second.ipv4: "c1/eth0"}
    assert env.state_files() == [f"{second.id}.json"]


async def test_parallel_adds_of_different_containers_all_succeed(env):
    paths = [f"/var/run/netns/p{i}" for i in range(20)]
    for p in paths:
        env.nl.add_pod_netns(p)
    eps = await asyncio.gather(*(env.manager.create(req(f"c{i}", p)) for i, p in enumerate(paths)))
    assert len({e.ipv4 for e in eps}) == len({e.id for e in eps}) == 20
    await asyncio.gather(*(env.manager.delete_attachment(f"c{i}", "eth0") for i in range(20)))
    assert env.ipam.used() == {} and env.state_files() == []


async def test_restart_keeps_ready_endpoints(env):
    ep = await env.manager.create(req())
    await env.restart()
    assert env.manager.endpoints() == [ep]
    assert env.ipam.used() == {"10.244.1.2": "c1/eth0"}
    nxt = await env.manager.create(req("c2", POD_B))
    assert (nxt.id, nxt.ipv4) == (2, "10.244.1.3")


async def test_restart_reconciles_the_datapath_with_the_ready_endpoints(env):
    """Restart prunes rows no endpoint owns and updates every ready one (re-attach)."""
    keep = await env.manager.create(req("c1", POD))
    gone = await env.manager.create(req("c2", POD_B))
    # c2's state file vanished while the agent was down; its datapath row stayed behind
    (env.tmp / "endpoints" / f"{gone.id}.json").unlink()
    env.dp.rows[keep.host_ifname] = datapath_row(replace(keep, id=99))
    await env.restart()
    assert env.dp.pruned == [gone.host_ifname]
    assert env.dp.rows == {keep.host_ifname: datapath_row(keep)}


@pytest.mark.parametrize("step", ["pod-configured", "datapath-configured"])
async def test_restart_rolls_back_an_interrupted_add(env, step):
    """A crash mid-ADD leaves a `creating` file, an address, a veth and maybe datapath rows:
    restart removes all."""
    env.raise_at = step
    crashed = env.manager.create(req())
    # Simulate the crash: run the ADD up to the step, then drop the manager without roll-back.
    env.manager._rollback = _no_rollback  # type: ignore[method-assign]
    with pytest.raises(InjectedFailure):
        await crashed
    assert env.state_files() == ["1.json"] and env.ipam.used() != {}
    assert len(env.node_links()) == 2
    await env.restart()
    await env.assert_clean()
    assert env.manager.endpoints() == []


async def _no_rollback(ep) -> None:
    return None


async def test_restart_finishes_an_interrupted_delete_and_removes_orphans(env):
    ep = await env.manager.create(req())
    # a `deleting` state file (crash mid-DEL) and an lxc veth nobody owns (crash before the
    # state file existed cannot make one, but an operator or older agent might)
    path = env.tmp / "endpoints" / f"{ep.id}.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "state": "deleting"}))
    await env.nl.node.add_veth("lxc00000000000", "eth9", 1500, peer_netns=POD)
    await env.restart()
    await env.assert_clean()


async def test_restart_releases_addresses_nobody_owns(env):
    env.ipam.allocate("ghost/eth0")
    await env.restart()
    assert env.ipam.used() == {}


async def test_restart_drains_the_cni_delete_queue(env):
    await env.manager.create(req("c1", POD))
    await env.manager.create(req("c2", POD_B))
    queue = env.tmp / "delete-queue"
    queue.mkdir()
    (queue / "c1.eth0.json").write_text(json.dumps({"containerID": "c1", "ifname": "eth0"}))
    (queue / "bad.json").write_text("{not json")
    (queue / ".lock").write_text("")
    await env.restart()
    assert [e.container_id for e in env.manager.endpoints()] == ["c2"]
    assert sorted(p.name for p in queue.iterdir()) == [".lock"]


async def test_gc_deletes_endpoints_not_in_the_valid_list(env):
    await env.manager.create(req("keep", POD))
    await env.manager.create(req("drop", POD_B))
    removed = await env.manager.gc({("keep", "eth0")})
    assert [e.container_id for e in removed] == ["drop"]
    assert [e.container_id for e in env.manager.endpoints()] == ["keep"]
    assert list(env.ipam.used().values()) == ["keep/eth0"]


async def test_the_policy_hook_runs_before_the_pod_can_pass_traffic(tmp_path):
    """ADD awaits `before_plumb` once the address is known and before any veth or datapath row
    exists (the agent writes the endpoint's policy there); a hook failure rolls ADD back."""
    env = Env(tmp_path)
    seen: list[tuple[str | None, list[str], dict[object, object]]] = []

    async def before_plumb(ep):
        seen.append((ep.ipv4, env.node_links(), dict(env.dp.rows)))
        if ep.pod_name == "denied":
            raise InjectedFailure("policy")

    params = EndpointParams(
        state_dir=tmp_path,
        delete_queue_dir=tmp_path / "delete-queue",
        mtu=1450,
        before_plumb=before_plumb,
    )
    env.manager = EndpointManager(params, env.nl, env.ipam, env.dp)
    await env.manager.start()
    try:
        ep = await env.manager.create(req(pod_name="web"))
        assert seen == [(ep.ipv4, ["lo"], {})]
        with pytest.raises(InjectedFailure):
            await env.manager.create(req("c2", POD_B, pod_name="denied"))
        assert "c2/eth0" not in env.ipam.used().values()
        assert len(env.dp.rows) == 1
    finally:
        await env.manager.stop()
