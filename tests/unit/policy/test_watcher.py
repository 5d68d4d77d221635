"""The policy component follows a real (sqlite) store: policies, pod labels and deletions reach
the computed policies and the subscribers hear of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pylium.api import validate
from pylium.policy import EndpointPolicy, Repository, trace
from pylium.policy.watcher import PolicyWatcher
from pylium.store import Store, open_store
from tests.support import eventually


def ns(name: str) -> dict[str, Any]:
    return validate({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def pod(name: str, labels: dict[str, str], ip: str) -> dict[str, Any]:
    return validate(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "x", "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "agnhost"}]},
            "status": {"podIP": ip},
        }
    )


DENY_TO_A = validate(
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "only-b", "namespace": "x"},
        "spec": {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
        },
    }
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(f"sqlite://{tmp_path}/store.db")
    try:
        yield s
    finally:
        await s.close()


async def test_watcher_follows_the_store(store: Store) -> None:
    """Initial list, a policy, a relabel and a delete each show in traces and notifications."""
    for obj in (
        ns("x"),
        pod("a", {"pod": "a"}, "10.244.1.10"),
        pod("c", {"pod": "c"}, "10.244.1.11"),
    ):
        await store.create(obj)
    repo = Repository()
    changed: list[str] = []

    def record(policies: dict[str, EndpointPolicy]) -> None:
        changed.extend(policies)

    repo.subscribe(record)
    watcher = PolicyWatcher(store, repo)
    await watcher.start()
    try:
        assert sorted(repo.endpoints()) == ["x/a", "x/c"]
        assert trace(repo, "x/c", "x/a", 80, "TCP").allowed

        await store.create(DENY_TO_A)

        async def denied() -> bool:
            return not trace(repo, "x/c", "x/a", 80, "TCP").allowed

        await eventually(denied, timeout=5)
        assert "x/a" in changed

        relabelled = await store.get("Pod", "x", "c")
        relabelled["metadata"]["labels"] = {"pod": "b"}
        await store.update(relabelled)

        async def allowed() -> bool:
            return trace(repo, "x/c", "x/a", 80, "TCP").allowed

        await eventually(allowed, timeout=5)

        await store.delete("NetworkPolicy", "x", "only-b")
        await store.delete("Pod", "x", "c")

        async def gone() -> bool:
            return "x/c" not in repo.endpoints() and not repo.rules()

        await eventually(gone, timeout=5)
        assert repo.policy("x/a").enforced == frozenset()
    finally:
        await watcher.stop()
