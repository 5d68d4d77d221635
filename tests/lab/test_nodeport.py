"""The per-packet service path (bpf/lib/nodeport.h) in a 3-node lab (tunnel, then native
routing), probed from the world namespace: NodePort on a node with the backend and on one
without it (source-NATed there), a LoadBalancer IP and an externalIP (both routed by the world
to node 1, which hosts no backend), externalTrafficPolicy=Local (the client's address reaches
the pod; a node without a local backend does not answer), a service without backends refused
at once, ClientIP affinity sticking to one backend."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from pylium.lab import record
from tests.lab.conftest import (
    apply,
    leftovers,
    pylium,
    running_pod,
    server_pod,
    store_get,
    unique_lab,
)
from tests.support import wait_for

pytestmark = pytest.mark.root

EXTERNAL_IP = "192.0.2.77"
WORLD_ADDRESSES = {record.WORLD_IP, record.WORLD_UNDERLAY_IP}


@pytest.fixture(scope="module", params=["tunnel", "native"])
def lab(request: pytest.FixtureRequest) -> Iterator[str]:
    """Three nodes; backends `np-a` on node 2 and `np-b` on node 3, no pod on node 1."""
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    name = unique_lab()
    try:
        pylium("lab", "up", "--name", name, "--nodes", "3", "--routing", request.param)
        apply(
            name,
            backend(name, "np-a", 2, "a"),
            backend(name, "np-b", 3, "b"),
            service("cluster", {"app": "np", "pod": "a"}, "NodePort"),
            service("lb", {"app": "np", "pod": "a"}, "LoadBalancer"),
            service("external", {"app": "np", "pod": "a"}, externalIPs=[EXTERNAL_IP]),
            service("local", {"app": "np", "pod": "a"}, "NodePort", externalTrafficPolicy="Local"),
            service("empty", {"app": "nothing"}, "NodePort"),
            service("sticky", {"app": "np"}, "NodePort", sessionAffinity="ClientIP"),
        )
        for pod in ("np-a", "np-b"):
            running_pod(name, pod)
        yield name
    finally:
        pylium("lab", "down", "--name", name, "--force", check=False)
        assert leftovers(name) == {}


def backend(lab: str, name: str, node: int, tag: str) -> dict[str, Any]:
    pod = server_pod(name)
    pod["metadata"]["labels"] = {"app": "np", "pod": tag}
    pod["spec"]["nodeName"] = record.node_name(lab, node)
    return pod


def service(
    name: str, selector: dict[str, str], type: str = "ClusterIP", **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "type": type,
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"}],
            **spec,
        },
    }


def world_probe(lab: str, dest: str) -> dict[str, Any]:
    """`pylium probe --from-world DEST --show-peer`: answer `NAME peer=IP` when it worked."""
    args = ["--lab", lab, "probe", "--from-world", dest, "--show-peer", "--timeout", "1"]
    result: dict[str, Any] = json.loads(pylium(*args, "-o", "json", check=False).stdout)
    return result


def answer(lab: str, dest: str) -> tuple[str, str]:
    """Wait until `dest` answers from the world: (backend pod, the peer address it saw)."""
    text: str = wait_for(lambda: world_probe(lab, dest)["answer"], timeout=20, interval=0.1)
    pod, _, peer = text.partition(" peer=")
    return pod, peer


def node_ip(lab: str, node: int) -> str:
    obj = store_get(lab, "Node", record.node_name(lab, node)) or {}
    return next(a["address"] for a in obj["status"]["addresses"] if a["type"] == "InternalIP")


def node_port(lab: str, name: str) -> int:
    def assigned() -> int | None:
        svc = store_get(lab, "Service", name, "default") or {}
        return ((svc.get("spec") or {}).get("ports") or [{}])[0].get("nodePort")

    return wait_for(assigned, timeout=15, interval=0.1)


def test_nodeport_answers_on_the_backends_node_and_on_another(lab: str) -> None:
    port = node_port(lab, "cluster")
    # node 2 hosts the backend: the client's own address reaches it
    pod, peer = answer(lab, f"{node_ip(lab, 2)}:{port}")
    assert pod == "np-a" and peer in WORLD_ADDRESSES
    # node 1 does not: it source-NATs to its own address and tunnels to node 2
    assert answer(lab, f"{node_ip(lab, 1)}:{port}") == ("np-a", node_ip(lab, 1))


def test_loadbalancer_ip_and_external_ip_answer(lab: str) -> None:
    def ingress() -> str | None:
        svc = store_get(lab, "Service", "lb", "default") or {}
        found = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return str(found[0]["ip"]) if found else None

    lb_ip = wait_for(ingress, timeout=15, interval=0.1)
    assert answer(lab, f"{lb_ip}:80")[0] == "np-a"
    assert answer(lab, f"{EXTERNAL_IP}:80")[0] == "np-a"


def test_external_traffic_policy_local_keeps_the_client_address(lab: str) -> None:
    port = node_port(lab, "local")
    pod, peer = answer(lab, f"{node_ip(lab, 2)}:{port}")
    assert pod == "np-a" and peer in WORLD_ADDRESSES
    # node 3 has no local backend: no answer (dropped, never forwarded elsewhere)
    assert not world_probe(lab, f"{node_ip(lab, 3)}:{port}")["ok"]


def test_a_service_without_backends_refuses_at_once(lab: str) -> None:
    port = node_port(lab, "empty")
    result = wait_for(
        lambda: (r := world_probe(lab, f"{node_ip(lab, 1)}:{port}"))["reason"] == "refused" and r,
        timeout=15,
        interval=0.1,
    )
    assert result["seconds"] < 0.5


def test_client_ip_affinity_sticks_to_one_backend(lab: str) -> None:
    dest = f"{node_ip(lab, 1)}:{node_port(lab, 'sticky')}"
    first = answer(lab, dest)[0]
    assert first in {"np-a", "np-b"}
    assert {world_probe(lab, dest)["answer"].partition(" ")[0] for _ in range(8)} == {first}
