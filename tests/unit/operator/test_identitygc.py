"""Identity GC on a real sqlite store: only identities no pod references, only after the
grace period."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pylium.operator.identitygc import IdentityGC, LabelSet, PodIdentityLabels, PodsInUse
from pylium.store import Object
from pylium.store.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.db")
    try:
        yield s
    finally:
        await s.close()


def pod(name: str, labels: dict[str, str], namespace: str = "default") -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }


def identity(number: int, security_labels: dict[str, str]) -> Object:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumIdentity",
        "metadata": {"name": str(number)},
        "security-labels": security_labels,
    }


async def names(store: SqliteStore) -> list[str]:
    objs, _ = await store.list("CiliumIdentity")
    return sorted(o["metadata"]["name"] for o in objs)


async def test_deletes_only_unreferenced_after_grace(store):
    """Of two identities, the one whose labels match a pod stays; the other goes once it was
    unreferenced for the whole grace period, not before."""
    web = pod("web-1", {"app": "web"})
    await store.create(web)
    await store.create(identity(300, dict(PodIdentityLabels()(web, None))))
    await store.create(identity(301, {"k8s:app": "gone", "k8s:io.kubernetes.pod.namespace": "x"}))
    now = [100.0]
    gc = IdentityGC(store, PodsInUse(store), grace=60, clock=lambda: now[0])

    assert await gc.collect() == []
    now[0] = 159.0
    assert await gc.collect() == []
    assert await names(store) == ["300", "301"]
    now[0] = 160.0
    assert await gc.collect() == ["301"]
    assert await names(store) == ["300"]


async def test_a_reference_in_between_restarts_the_grace(store):
    """An identity referenced again before its grace ran out starts a full new grace period
    when it becomes unreferenced once more."""
    used: set[LabelSet] = set()
    labels = {"k8s:app": "db"}

    async def in_use() -> set[LabelSet]:
        return used

    await store.create(identity(400, labels))
    now = [0.0]
    gc = IdentityGC(store, in_use, grace=10, clock=lambda: now[0])
    await gc.collect()  # unreferenced since 0
    now[0] = 5.0
    used.add(frozenset(labels.items()))
    await gc.collect()  # referenced: the mark is dropped
    used.clear()
    now[0] = 12.0
    assert await gc.collect() == []  # unreferenced since 12 only
    now[0] = 22.0
    assert await gc.collect() == ["400"]


async def test_pod_identity_labels_use_namespace_labels(store):
    """A pod's identity labels include its Namespace's labels, so an identity made for a
    namespace label set is referenced and one for stale namespace labels is not."""
    await store.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "prod", "labels": {"team": "a"}},
        }
    )
    api = pod("api-1", {"app": "api"}, namespace="prod")
    await store.create(api)
    ns = await store.get("Namespace", "", "prod")
    current = dict(PodIdentityLabels()(api, ns))
    assert current["k8s:io.cilium.k8s.namespace.labels.team"] == "a"
    stale = {**current, "k8s:io.cilium.k8s.namespace.labels.team": "b"}
    await store.create(identity(500, current))
    await store.create(identity(501, stale))
    gc = IdentityGC(store, PodsInUse(store), grace=0)
    assert await gc.collect() == ["501"]
    assert await names(store) == ["500"]
