"""Services in a one-node lab with socket LB (kube-proxy replacement): the operator gives a
Service its ClusterIP and EndpointSlices, the agent fills the LB maps, and a pod connecting to
the ClusterIP reaches both server pods while `getpeername` shows the ClusterIP, and its
NodePort on the node's InternalIP; a Service without endpoints refuses; a deleted Service
stops answering."""

from __future__ import annotations

import json
from typing import Any

from pylium.agent.client import AgentClient
from pylium.lab import record
from tests.lab.conftest import apply, pylium, running_pod, server_pod, store_get
from tests.support import wait_for


def web_pod(name: str) -> dict[str, Any]:
    pod = server_pod(name)
    pod["metadata"]["labels"] = {"app": "web"}
    return pod


def service(name: str, app: str, type: str = "ClusterIP") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "type": type,
            "selector": {"app": app},
            "ports": [
                {"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"},
                {"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"},
            ],
        },
    }


CLIENT = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "client", "namespace": "default"},
    "spec": {"containers": [{"name": "c", "image": "pylium/podserver",
                             "command": ["sleep", "infinity"]}]},
}  # fmt: skip


def probe(lab: str, dest: str, protocol: str = "tcp") -> dict[str, Any]:
    args = ["--lab", lab, "probe", "client", dest, "--protocol", protocol, "-o", "json"]
    result: dict[str, Any] = json.loads(pylium(*args, check=False).stdout)
    return result


def cluster_ip(lab: str, name: str) -> str:
    def assigned() -> str | None:
        svc = store_get(lab, "Service", name, "default") or {}
        ip = (svc.get("spec") or {}).get("clusterIP")
        return str(ip) if ip else None

    return wait_for(assigned, timeout=15, interval=0.1)


def test_a_pod_reaches_both_backends_through_the_cluster_ip(lab: str) -> None:
    apply(lab, web_pod("web-a"), web_pod("web-b"), CLIENT, service("web", "web", "NodePort"),
          service("empty", "nothing"))  # fmt: skip
    for name in ("web-a", "web-b", "client"):
        running_pod(lab, name)
    ip = cluster_ip(lab, "web")

    seen: set[str] = set()

    def both() -> bool:
        result = probe(lab, f"{ip}:80")
        if result["ok"]:
            seen.add(result["answer"])
        return seen == {"web-a", "web-b"}

    assert wait_for(both, timeout=30, interval=0.05)  # random slots: both answer soon
    assert probe(lab, f"{ip}:53", "udp")["answer"] in {"web-a", "web-b"}

    # getpeername() shows the service, not the backend the socket really talks to
    script = f"import socket; print(socket.create_connection(('{ip}', 80)).getpeername()[0])"
    peer = pylium("--lab", lab, "exec", "client", "--", "python3", "-c", script)
    assert peer.stdout.strip() == ip

    # the NodePort on the node's own InternalIP (a frontend of its own, from the Node object)
    web = store_get(lab, "Service", "web", "default") or {}
    node_port = web["spec"]["ports"][0]["nodePort"]
    node = store_get(lab, "Node", f"{lab}-node1") or {}
    node_ip = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    assert probe(lab, f"{node_ip}:{node_port}")["answer"] in {"web-a", "web-b"}

    # the agent's view: the desired maps hold the ClusterIP and the kernel's maps equal them
    rec = record.load(lab)
    assert rec is not None
    dump = AgentClient(rec.nodes[0].agentSocket).lb()
    assert dump["inSync"] and any(f"ADDR={ip}:80/TCP SLOT=0" in line for line in dump["maps"])

    services = pylium("--lab", lab, "get", "services", "-o", "wide").stdout
    assert ip in services and "app=web" in services
    assert "web-" in pylium("--lab", lab, "get", "endpointslices").stdout

    empty = cluster_ip(lab, "empty")
    assert wait_for(lambda: probe(lab, f"{empty}:80")["reason"] == "refused", timeout=10)

    pylium("--lab", lab, "delete", "service", "web")
    assert wait_for(lambda: not probe(lab, f"{ip}:80")["ok"], timeout=15, interval=0.2)
