"""The UI served by the relay: the service map and flow API over two in-process node servers
and a store with pods, and the page rendered by headless Chromium."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from pylium.hubble.flow import IP, Endpoint, Verdict
from pylium.hubble.relay import Peer, Relay
from pylium.hubble.server import GrpcParams, hubble_server
from pylium.hubble.ui import read_ui_url, servicemap, write_ui_url
from pylium.hubble.ui.web import UiServer, loopback_address
from pylium.store import open_store
from tests.unit.hubble.flows import DB, T0, WEB1, WEB2, WORLD, make_flow
from tests.unit.hubble.test_relay import node_observer

SERVICE_IP = "10.96.0.10"


def pod(name: str, namespace: str, ip: str, node: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": node},
        "status": {"podIP": ip},
    }


@pytest.fixture
async def ui(tmp_path):
    """Relay + UI over node n1 (web-1 -> web-2, web-1 -> the web Service) and node n2
    (db-0 -> web-2 dropped), with the three pods and the Service in the store."""
    observers = {"n1": node_observer("n1", []), "n2": node_observer("n2", [])}
    ring1, ring2 = observers["n1"].ring, observers["n2"].ring
    ring1.append(make_flow(WEB1, WEB2, time_ns=T0 + 1, uuid="fwd", node="n1"))
    to_service = make_flow(WEB1, WEB2, time_ns=T0 + 2, uuid="svc", node="n1")
    ring1.append(replace(to_service, destination=Endpoint(), IP=IP("10.244.1.10", SERVICE_IP)))
    ring2.append(
        make_flow(DB, WEB2, verdict=Verdict.DROPPED, time_ns=T0 + 3, uuid="drop", node="n2")
    )
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    await store.create(pod("web-1", "default", "10.244.1.10", "n1"))
    await store.create(pod("web-2", "default", "10.244.1.20", "n1"))
    await store.create(pod("db-0", "prod", "10.244.2.5", "n2"))
    await store.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": SERVICE_IP, "ports": [{"port": 80}]},
        }
    )
    servers = [
        hubble_server(GrpcParams(tmp_path / f"{name}.sock"), lambda o=obs: o, name)
        for name, obs in observers.items()
    ]
    relay = Relay(
        GrpcParams(tmp_path / "relay.sock"),
        [Peer(name, f"unix://{tmp_path / name}.sock") for name in observers],
    )
    server = UiServer("127.0.0.1:0", relay.server.target, store)
    for s in servers:
        await s.start()
    await relay.start()
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()
        await relay.stop()
        for s in servers:
            await s.stop()
        await store.close()


async def get(url: str) -> tuple[int, object]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        body = await resp.text()
        return resp.status, json.loads(body) if resp.content_type == "application/json" else body


async def test_the_service_map_has_the_pods_the_service_and_a_dropped_edge(ui):
    status, body = await get(ui + "api/servicemap")
    assert status == 200 and isinstance(body, dict)
    ids = {n["id"] for n in body["nodes"]}
    assert {"pod:default/web-1", "pod:default/web-2", "pod:prod/db-0"} <= ids
    assert "service:default/web" in ids
    assert body["namespaces"] == ["default", "prod"]
    edges = {(e["source"], e["destination"], e["verdict"]): e for e in body["edges"]}
    drop = edges[("pod:prod/db-0", "pod:default/web-2", "DROPPED")]
    assert drop["dropReasons"] == {"INVALID_SOURCE_IP": 1} and drop["flows"] == 1
    assert ("pod:default/web-1", "pod:default/web-2", "FORWARDED") in edges
    assert ("pod:default/web-1", "service:default/web", "FORWARDED") in edges


async def test_the_flow_api_filters_with_observe_options(ui):
    _, body = await get(ui + "api/flows?verdict=DROPPED")
    assert isinstance(body, dict)
    assert [r["flow"]["uuid"] for r in body["flows"]] == ["drop"]
    _, body = await get(ui + "api/flows?not-verdict=DROPPED&number=1")
    assert isinstance(body, dict)
    assert [r["flow"]["uuid"] for r in body["flows"]] == ["svc"]
    _, body = await get(ui + "api/servicemap?namespace=prod")
    assert isinstance(body, dict)
    assert [e["verdict"] for e in body["edges"]] == ["DROPPED"]
    status, text = await get(ui + "api/flows?verdict=MAYBE")
    assert status == 400 and "invalid verdict" in str(text)


async def test_the_page_and_its_assets_are_served(ui):
    status, html = await get(ui)
    assert status == 200 and '<script type="module" src="/static/app.js">' in str(html)
    for asset in ("static/app.js", "static/style.css"):
        assert (await get(ui + asset))[0] == 200


def test_the_ui_listens_on_loopback_only(tmp_path, monkeypatch):
    assert loopback_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert loopback_address("[::1]:8080") == ("::1", 8080)
    with pytest.raises(ValueError, match="loopback only"):
        loopback_address("0.0.0.0:8080")
    monkeypatch.setattr("pylium.paths.RUN_ROOT", tmp_path)
    (tmp_path / "labs" / "x").mkdir(parents=True)
    assert read_ui_url("x") is None
    write_ui_url("x", "http://127.0.0.1:1234/")
    assert read_ui_url("x") == "http://127.0.0.1:1234/"


def chromium_argv(profile: Path, *args: str) -> list[str]:
    """Headless Chromium as the issue runs it, with a throw-away profile directory."""
    return [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={profile}", "--window-size=1200,800",
        "--virtual-time-budget=5000", *args,
    ]  # fmt: skip


async def chromium(tmp_path: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *chromium_argv(tmp_path / "chromium", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    return out.decode()


async def test_headless_chromium_renders_the_pods_and_the_drop(ui, tmp_path):
    assert shutil.which("chromium"), "chromium is installed by scripts/setup.sh"
    dom = await chromium(tmp_path, "--dump-dom", ui)
    for pod_id in ("pod:default/web-1", "pod:default/web-2", "pod:prod/db-0"):
        assert f'data-id="{pod_id}"' in dom
    assert 'data-verdict="DROPPED"' in dom
    assert "DROPPED: INVALID_SOURCE_IP" in dom
    assert '<tr class="DROPPED">' in dom
    shot = tmp_path / "ui.png"
    await chromium(tmp_path, f"--screenshot={shot}", ui)
    assert shot.stat().st_size > 10_000


def test_a_side_without_a_pod_name_is_the_store_pod_at_its_address():
    """A node names only its own pods: a flow to a remote pod (identity only) and from an
    unknown source (world) still ends at the store's pod; a peer to itself keeps its edge."""
    remote = Endpoint(identity=5678)
    flows = [
        replace(make_flow(WEB1, WEB2), source=WORLD, destination=remote, verdict=Verdict.DROPPED),
        replace(make_flow(WORLD, WORLD), uuid="loop"),
    ]
    pods = [pod("web-2", "default", "10.244.1.20", "n2")]
    edges = {
        (e["source"], e["destination"], e["verdict"])
        for e in servicemap.build(pods, [], flows)["edges"]
    }
    assert edges == {
        ("reserved:world", "pod:default/web-2", "DROPPED"),
        ("reserved:world", "reserved:world", "FORWARDED"),
    }
