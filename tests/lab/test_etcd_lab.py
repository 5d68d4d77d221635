"""A two-node lab on an etcd store (a throwaway etcd on loopback): its processes inside node
namespaces reach etcd through the lab's proxy, pods spread and talk across nodes, and `lab
down` clears the lab's keys, and only those."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pylium.lab import etcdkeys
from pylium.store import open_store
from tests.lab.conftest import (
    answering,
    apply,
    leftovers,
    pylium,
    running_pod,
    server_pod,
    unique_lab,
)
from tests.unit.store.etcd_server import ETCD, EtcdServer

pytestmark = pytest.mark.root

BYSTANDER: dict[str, object] = {
    "apiVersion": "v1",
    "kind": "Namespace",
    "metadata": {"name": "not-the-lab"},
}


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """A running etcd, holding one object outside any lab's key root."""
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    if ETCD is None:
        pytest.skip("needs the etcd binary (Debian's etcd-server)")
    server = EtcdServer(tmp_path_factory.mktemp("etcd"))
    try:
        server.start()
        asyncio.run(_apply(server.url("/bystander"), BYSTANDER))
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)


async def _apply(url: str, obj: dict[str, object]) -> None:
    store = open_store(url)
    try:
        await store.apply(obj)
    finally:
        await store.close()


async def _count(url: str, kinds: tuple[str, ...]) -> dict[str, int]:
    store = open_store(url)
    try:
        return {kind: len((await store.list(kind))[0]) for kind in kinds}
    finally:
        await store.close()


def test_etcd_lab_runs_pods_across_nodes_and_down_clears_its_keys(etcd: EtcdServer) -> None:
    lab = unique_lab()
    url = etcd.url()
    lab_url = f"{url}/{lab}"
    kinds = ("Namespace", "Node", "CiliumNode", "Pod", "PodCIDRPool")
    try:
        pylium("lab", "up", "--name", lab, "--nodes", "2", "--store", url)
        report = json.loads(pylium("--lab", lab, "lab", "status", "-o", "json").stdout)
        assert report["store"] == lab_url
        assert report["daemons"]["store proxy"]["running"] is True
        assert [n["health"] for n in report["nodes"]] == ["ok", "ok"]
        apply(lab, server_pod("a"), server_pod("b"))
        pods = {n: running_pod(lab, n) for n in ("a", "b")}
        assert {p["spec"]["nodeName"] for p in pods.values()} == {f"{lab}-node1", f"{lab}-node2"}
        assert answering(lab, "a", "b") == "b"
        assert answering(lab, "b", "a", 53, "udp") == "a"
        nodes = pylium("--lab", lab, "get", "nodes").stdout.splitlines()[1:]
        assert [line.split()[1] for line in nodes] == ["Ready", "Ready"]
        before = asyncio.run(_count(lab_url, kinds))
        assert before["Node"] == before["CiliumNode"] == 2 and before["Pod"] == 2
    finally:
        pylium("lab", "down", "--name", lab, "--force", check=False)
        assert leftovers(lab) == {}
    assert asyncio.run(_count(lab_url, kinds)) == dict.fromkeys(kinds, 0)
    assert asyncio.run(_count(etcd.url("/bystander"), ("Namespace",))) == {"Namespace": 1}
    assert not Path(f"/var/run/pylium/labs/{lab}").exists()


def test_down_removes_the_lab_even_when_etcd_is_gone(etcd: EtcdServer) -> None:
    lab = unique_lab()
    try:
        pylium("lab", "up", "--name", lab, "--store", etcd.url())
        etcd.stop()
        down = pylium("lab", "down", "--name", lab)
        assert "they stay in etcd" in down.stderr
        assert leftovers(lab) == {}
    finally:
        if etcd.proc is None:
            etcd.start()
        pylium("lab", "down", "--name", lab, "--force", check=False)
    assert asyncio.run(etcdkeys.clear(f"{etcd.url()}/{lab}")) > 0  # what down had to leave
