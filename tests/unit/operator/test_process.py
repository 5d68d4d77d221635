"""The real `pylium-operator` process on a temporary sqlite store: it allocates, reclaims,
collects identities, and stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pylium.store import NotFound, Object
from pylium.store.sqlite import SqliteStore
from tests.support import eventually

OPERATOR = Path(sys.executable).parent / "pylium-operator"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.db", poll_interval=0.01)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def operator(tmp_path: Path, store: SqliteStore) -> Iterator[subprocess.Popen[str]]:
    """pylium-operator on the test's store with a /24 pool cut into /26s (room for 4 nodes)."""
    log = (tmp_path / "operator.log").open("w")
    proc = subprocess.Popen(
        [
            str(OPERATOR),
            "--store",
            f"sqlite://{store.path}",
            "--cluster-pool-ipv4-cidr",
            "10.200.0.0/24",
            "--cluster-pool-ipv4-mask-size",
            "26",
            "--identity-gc-grace",
            "0.3",
            "--identity-gc-interval",
            "0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def node(name: str) -> Object:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


async def test_allocates_reclaims_collects_and_stops(tmp_path, store, operator):
    """Nodes get distinct /26s, a deleted node's /26 goes to the next node, an identity no pod
    uses is deleted, and SIGTERM ends the process with status 0."""

    async def cidrs() -> dict[str, str]:
        objs, _ = await store.list("CiliumNode")
        return {
            o["metadata"]["name"]: o["spec"]["ipam"]["podCIDRs"][0]
            for o in objs
            if (o.get("spec") or {}).get("ipam", {}).get("podCIDRs")
        }

    for name in ("a", "b", "c"):
        await store.create(node(name))

    async def three() -> dict[str, str] | None:
        got = await cidrs()
        return got if len(got) == 3 else None

    got = await eventually(three)
    assert sorted(got.values()) == ["10.200.0.0/26", "10.200.0.128/26", "10.200.0.64/26"]

    await store.delete("Node", "", "b")

    async def b_gone() -> bool:
        return "b" not in await cidrs()

    await eventually(b_gone)
    await store.create(node("d"))

    async def d_cidr() -> str | None:
        return (await cidrs()).get("d")

    assert await eventually(d_cidr) == got["b"]

    await store.create(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumIdentity",
            "metadata": {"name": "1000"},
            "security-labels": {"k8s:app": "nobody"},
        }
    )

    async def identity_gone() -> bool:
        try:
            await store.get("CiliumIdentity", "", "1000")
        except NotFound:
            return True
        return False

    await eventually(identity_gone)

    operator.send_signal(signal.SIGTERM)
    assert operator.wait(timeout=10) == 0
    log = (tmp_path / "operator.log").read_text()
    assert "operator stopped" in log
    assert "Traceback" not in log


def test_bad_pool_settings_exit_2(tmp_path):
    """A mask size larger than the pool is refused before anything runs."""
    run = subprocess.run(
        [
            str(OPERATOR),
            "--store",
            f"sqlite://{tmp_path}/s.db",
            "--cluster-pool-ipv4-cidr",
            "10.0.0.0/16",
            "--cluster-pool-ipv4-mask-size",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert "larger than the pool" in run.stderr
    assert not (tmp_path / "s.db").exists()
