"""What the connectivity test deploys into a lab, and where it all is once running.

Pods go into the `pylium-test` namespace, pinned by `spec.nodeName` (as Cilium's test pins its
client and echo deployments with affinities): `client` and `echo-same-node` on the first node,
`echo-other-node` on the second (when there is one), each echo pod behind a ClusterIP Service
of its name (as Cilium's echo services). They stay after the test, as Cilium's do, so a re-run
finds them running. Each node also gets a listener in its own namespace on
HOST_PORT for pod-to-host; those run only while the test does.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pylium import paths
from pylium.lab import cgroup, netns, process
from pylium.lab.record import WORLD_IP, LabRecord
from pylium.loadbalancer.serviceipam import admit
from pylium.routing.desired import internal_ip
from pylium.store import NotFound, Object, Store, open_store

NAMESPACE = "pylium-test"
ECHO_TCP, ECHO_UDP = 8080, 8053
HOST_PORT = 4240
"""The node listener's TCP port (Cilium's health port)."""
RUNNING_TIMEOUT = 60.0
LISTENER_TIMEOUT = 10.0


class DeployError(Exception):
    """The test pods or listeners did not come up (the message says which and why)."""


def _pod(name: str, node: str, command: list[str] | None = None) -> Object:
    container: dict[str, object] = {"name": name, "image": "pylium/podserver"}
    if command:
        container["command"] = command
    else:
        container["ports"] = [
            {"containerPort": ECHO_TCP, "protocol": "TCP"},
            {"containerPort": ECHO_UDP, "protocol": "UDP"},
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"name": name}},
        "spec": {"nodeName": node, "containers": [container]},
    }


def _service(name: str) -> Object:
    """A ClusterIP Service in front of the echo pod `name`, on the pod's own ports."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "selector": {"name": name},
            "ports": [
                {"name": "tcp", "port": ECHO_TCP, "targetPort": ECHO_TCP, "protocol": "TCP"},
                {"name": "udp", "port": ECHO_UDP, "targetPort": ECHO_UDP, "protocol": "UDP"},
            ],
        },
    }


def services(lab: LabRecord) -> list[Object]:
    """One Service per echo pod."""
    pods = [o["metadata"]["name"] for o in manifests(lab) if o["kind"] == "Pod"]
    return [_service(name) for name in pods if name != "client"]


def manifests(lab: LabRecord) -> list[Object]:
    """The namespace and the pods, pinned to the lab's first (and second) node."""
    first = lab.nodes[0].name
    objs: list[Object] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        _pod("client", first, ["sleep", "infinity"]),
        _pod("echo-same-node", first),
    ]
    if len(lab.nodes) > 1:
        objs.append(_pod("echo-other-node", lab.nodes[1].name))
    return objs


@dataclass
class Deployment:
    """Where everything the scenarios probe lives."""

    lab: LabRecord
    pods: dict[str, Object]
    """name -> the running pod."""
    host_ips: dict[str, str] = field(default_factory=dict)
    """node name -> InternalIP, each with a listener on HOST_PORT answering `<node>-host`."""
    world_ip: str = WORLD_IP
    listener_pids: list[int] = field(default_factory=list)
    service_ips: dict[str, str] = field(default_factory=dict)
    """Service name -> ClusterIP (the echo pods' services)."""

    def pod_ip(self, name: str) -> str | None:
        """A deployed pod's IP (None: not deployed here, e.g. one node only)."""
        pod = self.pods.get(name)
        return None if pod is None else str(pod["status"]["podIP"])

    def client_netns(self) -> str:
        """The client pod's network namespace."""
        return str(self.pods["client"]["metadata"]["annotations"]["pylium.io/netns"])

    def stop(self) -> None:
        """Stop the node listeners (the pods stay)."""
        for pid in self.listener_pids:
            process.stop(pid)
        self.listener_pids.clear()


async def _ensure_services(store: Store, objs: list[Object]) -> dict[str, str]:
    """Create the services that are missing (with a ClusterIP, as the API server would);
    returns name -> ClusterIP."""
    ips = {}
    for obj in objs:
        name = obj["metadata"]["name"]
        try:
            svc = await store.get("Service", NAMESPACE, name)
        except NotFound:
            svc = await store.create(await admit(store, obj))
        ips[name] = str(svc["spec"]["clusterIP"])
    return ips


async def _apply_and_wait(store: Store, objs: list[Object]) -> dict[str, Object]:
    for obj in objs:
        await store.apply(obj)
    want = {o["metadata"]["name"] for o in objs if o["kind"] == "Pod"}
    deadline = time.monotonic() + RUNNING_TIMEOUT
    while True:
        pods, _ = await store.list("Pod", NAMESPACE)
        running = {
            p["metadata"]["name"]: p
            for p in pods
            if (p.get("status") or {}).get("phase") == "Running"
            and p["status"].get("podIP")
            and all(c.get("ready") for c in p["status"].get("containerStatuses") or [])
        }
        if want <= set(running):
            return {n: running[n] for n in want}
        if time.monotonic() > deadline:
            states = {
                p["metadata"]["name"]: (p.get("status") or {}).get("message")
                or (p.get("status") or {}).get("phase", "Pending")
                for p in pods
            }
            raise DeployError(f"test pods not running after {RUNNING_TIMEOUT:.0f}s: {states}")
        await asyncio.sleep(0.1)


def _wait_listening(pod: Object) -> None:
    """Wait until an echo pod's server accepts (its UDP port is bound before its TCP one): a
    Running pod's process may not listen yet, as a pod without a readiness probe."""
    ns = pod["metadata"]["annotations"]["pylium.io/netns"]
    deadline = time.monotonic() + LISTENER_TIMEOUT
    while not netns.can_connect(ns, pod["status"]["podIP"], ECHO_TCP):
        if time.monotonic() > deadline:
            raise DeployError(f"pod {pod['metadata']['name']} does not listen on {ECHO_TCP}")
        time.sleep(0.05)


def _start_listener(lab: LabRecord, node_name: str, ip: str) -> int:
    node = lab.node(node_name)
    argv = [
        sys.executable, "-m", "pylium.lab.podserver", "--name", f"{node_name}-host",
        "--tcp", str(HOST_PORT),
    ]  # fmt: skip
    log = paths.lab_dir(lab.name) / f"connectivity-{node_name}.log"
    pid = process.start(netns.nsenter_argv(node.netns, argv), log).pid
    deadline = time.monotonic() + LISTENER_TIMEOUT
    while not netns.can_connect(node.netns, ip, HOST_PORT):
        if not process.alive(pid) or time.monotonic() > deadline:
            process.stop(pid)
            raise DeployError(f"{node_name}: the host listener did not start (see {log})")
        time.sleep(0.05)
    return pid


def deploy(lab: LabRecord) -> Deployment:
    """Deploy (or find) the test pods, start the node listeners; `stop()` the result after."""

    async def setup() -> tuple[dict[str, Object], dict[str, str], dict[str, str]]:
        store = open_store(lab.store)
        try:
            pods = await _apply_and_wait(store, manifests(lab))
            service_ips = await _ensure_services(store, services(lab))
            nodes, _ = await store.list("Node")
            cns, _ = await store.list("CiliumNode")
        finally:
            await store.close()
        by_name = {c["metadata"]["name"]: c for c in cns}
        ours = {n.name for n in lab.nodes}
        ips = {}
        for n in nodes:
            name = n["metadata"]["name"]
            ip = internal_ip(by_name.get(name), n)
            if ip and name in ours:
                ips[name] = ip
        return pods, ips, service_ips

    pods, ips, service_ips = asyncio.run(setup())
    for name, pod in pods.items():
        if name != "client":
            _wait_listening(pod)
    deployment = Deployment(lab=lab, pods=pods, service_ips=service_ips)
    try:
        for node_name, ip in sorted(ips.items()):
            deployment.listener_pids.append(_start_listener(lab, node_name, ip))
            deployment.host_ips[node_name] = ip
    except BaseException:
        deployment.stop()
        raise
    return deployment


def probe_in_pod(
    deployment: Deployment, dest: str, port: int, protocol: str, timeout: float = 2.0
) -> dict[str, Any]:
    """Probe from inside the client pod (its namespace and node cgroup, as `pylium exec`
    would); returns the probe's JSON result."""
    client = deployment.pods["client"]
    cg = Path(deployment.lab.node(client["spec"]["nodeName"]).cgroup)

    def join_cgroup() -> None:
        cgroup.add_pid(cg, os.getpid())

    argv = netns.nsenter_argv(
        deployment.client_netns(),
        [sys.executable, "-m", "pylium.lab.probe", dest, str(port), "--protocol", protocol,
         "--timeout", str(timeout)],
    )  # fmt: skip
    proc = subprocess.run(
        argv, capture_output=True, text=True, preexec_fn=join_cgroup, timeout=timeout + 10
    )
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        result = {"ok": False, "answer": None, "reason": proc.stderr.strip() or "probe failed"}
    return result
