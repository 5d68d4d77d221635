"""What the connectivity test deploys into a lab, and where it all is once running.

Pods go into the `pylium-test` namespace, pinned by `spec.nodeName` (as Cilium's test pins its
client and echo deployments with affinities): `client` and `echo-same-node` on the first node,
`echo-other-node` on the second (when there is one). Services (as Cilium's echo services):

- each echo pod behind a LoadBalancer Service of its name (so also a ClusterIP and a NodePort),
  with one address of the lab's externalIPs range: node 1 "announces" the LB pool and that
  range to the world, so the world reaches a local backend (echo-same-node) and a remote one
  (echo-other-node) through it;
- `echo-affinity`: ClusterIP, `sessionAffinity: ClientIP`, both echo pods behind it;
- `echo-no-backends`: ClusterIP whose selector matches no pod (must refuse, not time out);
- `echo-local`: NodePort, `externalTrafficPolicy: Local`, in front of the last echo pod (on
  node 2 when there is one): only its node answers, and keeps the client's address.

They stay after the test, as Cilium's do, so a re-run finds them running. Each node also gets a
listener in its own namespace on HOST_PORT for pod-to-host, and the world one on its underlay
address (the nodes' gateway: an outside address besides the world server's, for the policy CIDR
scenario); those run only while the test does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pylium import paths
from pylium.lab import cgroup, netns, process
from pylium.lab.record import (
    EXTERNAL_IPS,
    WORLD_IP,
    WORLD_UNDERLAY_IP,
    LabRecord,
    world_netns,
)
from pylium.loadbalancer.serviceipam import admit, forget
from pylium.routing.desired import internal_ip
from pylium.store import NotFound, Object, Store, open_store

NAMESPACE = "pylium-test"
ECHO_TCP, ECHO_UDP = 8080, 8053
HOST_PORT = 4240
"""The node listener's TCP port (Cilium's health port)."""
RUNNING_TIMEOUT = 60.0
LISTENER_TIMEOUT = 10.0
SERVICE_TIMEOUT = 30.0
"""Seconds every node may take to program the test's services."""
PROBES_AT_ONCE = 4
"""Probe processes run side by side: enough to hide their start-up, few for a 2-core machine."""
LB_IP_TIMEOUT = 30.0
"""Seconds the operator may take to give the LoadBalancer Services their addresses."""
ECHO_LABEL = {"kind": "echo"}
"""Every echo pod carries it (Cilium's label): the affinity Service selects them all."""
AFFINITY, NO_BACKENDS, LOCAL = "echo-affinity", "echo-no-backends", "echo-local"
ProbeSource = Literal["client", "world"]
"""Where a probe starts: the client pod, or the lab's world namespace (outside the cluster)."""


class DeployError(Exception):
    """The test pods or listeners did not come up (the message says which and why)."""


def _pod(name: str, node: str, command: list[str] | None = None) -> Object:
    container: dict[str, object] = {"name": name, "image": "pylium/podserver"}
    labels = {"name": name}
    if command:
        container["command"] = command
    else:
        labels |= ECHO_LABEL
        container["ports"] = [
            {"containerPort": ECHO_TCP, "protocol": "TCP"},
            {"containerPort": ECHO_UDP, "protocol": "UDP"},
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {"nodeName": node, "containers": [container]},
    }


def _service(name: str, selector: dict[str, str], **spec: object) -> Object:
    """A Service on the echo pods' own ports."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "selector": selector,
            "ports": [
                {"name": "tcp", "port": ECHO_TCP, "targetPort": ECHO_TCP, "protocol": "TCP"},
                {"name": "udp", "port": ECHO_UDP, "targetPort": ECHO_UDP, "protocol": "UDP"},
            ],
            **spec,
        },
    }


def services(lab: LabRecord) -> list[Object]:
    """A LoadBalancer Service with an external IP per echo pod, the affinity and the
    no-backends Services."""
    pods = [o["metadata"]["name"] for o in manifests(lab) if o["kind"] == "Pod"]
    external = ipaddress.ip_network(EXTERNAL_IPS)
    echo = [
        _service(
            name,
            {"name": name},
            type="LoadBalancer",
            externalIPs=[str(external[10 + i])],
        )
        for i, name in enumerate(n for n in pods if n != "client")
    ]
    return [
        *echo,
        _service(AFFINITY, ECHO_LABEL, sessionAffinity="ClientIP"),
        _service(NO_BACKENDS, {"name": "nothing"}),
        _service(LOCAL, {"name": pods[-1]}, type="NodePort", externalTrafficPolicy="Local"),
    ]


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
    gateway_ip: str | None = None
    """The world's underlay address, with a listener on HOST_PORT answering `<lab>-gateway`."""
    listener_pids: list[int] = field(default_factory=list)
    service_ips: dict[str, str] = field(default_factory=dict)
    """Service name -> ClusterIP (every service of the deployment)."""
    node_ports: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Echo service name -> its (TCP, UDP) nodePorts."""
    external_ips: dict[str, list[str]] = field(default_factory=dict)
    """Echo service name -> its externalIPs."""
    lb_ips: dict[str, str] = field(default_factory=dict)
    """Echo service name -> its LoadBalancer IP."""
    local_node_port: int | None = None
    """The TCP nodePort of LOCAL (externalTrafficPolicy Local)."""
    service_backends: dict[str, str] = field(default_factory=dict)
    """Single-pod service name -> that pod's name (`name=` selectors)."""

    def pod_ip(self, name: str) -> str | None:
        """A deployed pod's IP (None: not deployed here, e.g. one node only)."""
        pod = self.pods.get(name)
        return None if pod is None else str(pod["status"]["podIP"])

    def client_netns(self) -> str:
        """The client pod's network namespace."""
        return str(self.pods["client"]["metadata"]["annotations"]["pylium.io/netns"])

    def stop(self) -> None:
        """Stop the node and gateway listeners (the pods stay)."""
        for pid in self.listener_pids:
            process.stop(pid)
        self.listener_pids.clear()


def _differs(have: Object, want: Object) -> bool:
    """An existing service made from other manifests (an older pylium's deployment)."""
    return any(have["spec"].get(k) != v for k, v in want["spec"].items() if k != "ports")


async def _ensure_services(store: Store, objs: list[Object]) -> dict[str, Object]:
    """Create the services that are missing or differ (with a ClusterIP and NodePorts, as the
    API server would); returns name -> the service once LoadBalancers have their IP."""
    made = {}
    for obj in objs:
        name = obj["metadata"]["name"]
        try:
            svc: Object | None = await store.get("Service", NAMESPACE, name)
        except NotFound:
            svc = None
        if svc is not None and _differs(svc, obj):
            await store.delete("Service", NAMESPACE, name)
            await forget(store, "Service", NAMESPACE, name)
            svc = None
        made[name] = svc or await store.create(await admit(store, obj))
    deadline = time.monotonic() + LB_IP_TIMEOUT
    for name, svc in made.items():
        while svc["spec"].get("type") == "LoadBalancer" and not _lb_ip(svc):
            if time.monotonic() > deadline:
                raise DeployError(f"service {name}: no LoadBalancer IP after {LB_IP_TIMEOUT:.0f}s")
            await asyncio.sleep(0.1)
            svc = made[name] = await store.get("Service", NAMESPACE, name)
    return made


def _lb_ip(svc: Object) -> str | None:
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return str(ingress[0]["ip"]) if ingress and ingress[0].get("ip") else None


def _node_ports(svc: Object) -> tuple[int, int]:
    by_protocol = {p["protocol"]: int(p["nodePort"]) for p in svc["spec"]["ports"]}
    return by_protocol["TCP"], by_protocol["UDP"]


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


def _start_listener(lab: LabRecord, ns: str, name: str, ip: str) -> int:
    """A server in namespace `ns` answering `name` on ip:HOST_PORT; returns its pid once it
    accepts."""
    argv = [
        sys.executable, "-m", "pylium.lab.podserver", "--name", name,
        "--tcp", str(HOST_PORT), "--address", ip,
    ]  # fmt: skip
    log = paths.lab_dir(lab.name) / f"connectivity-{name}.log"
    pid = process.start(netns.nsenter_argv(ns, argv), log).pid
    deadline = time.monotonic() + LISTENER_TIMEOUT
    while not netns.can_connect(ns, ip, HOST_PORT):
        if not process.alive(pid) or time.monotonic() > deadline:
            process.stop(pid)
            raise DeployError(f"{name}: the listener did not start (see {log})")
        time.sleep(0.05)
    return pid


def deploy(lab: LabRecord) -> Deployment:
    """Deploy (or find) the test pods, start the node and gateway listeners; `stop()` the
    result after."""

    async def setup() -> tuple[dict[str, Object], dict[str, str], dict[str, Object]]:
        store = open_store(lab.store)
        try:
            pods = await _apply_and_wait(store, manifests(lab))
            svcs = await _ensure_services(store, services(lab))
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
        return pods, ips, svcs

    pods, ips, svcs = asyncio.run(setup())
    for name, pod in pods.items():
        if name != "client":
            _wait_listening(pod)
    deployment = Deployment(
        lab=lab,
        pods=pods,
        service_ips={n: str(s["spec"]["clusterIP"]) for n, s in svcs.items()},
    )
    for name, svc in svcs.items():
        selected = svc["spec"]["selector"].get("name")
        if selected in pods:
            deployment.service_backends[name] = selected
        if name == LOCAL:
            deployment.local_node_port = _node_ports(svc)[0]
        lb_ip = _lb_ip(svc)
        if lb_ip is not None:
            deployment.node_ports[name] = _node_ports(svc)
            deployment.lb_ips[name] = lb_ip
            deployment.external_ips[name] = list(svc["spec"].get("externalIPs") or [])
    try:
        for node_name, ip in sorted(ips.items()):
            node_ns = lab.node(node_name).netns
            deployment.listener_pids.append(_start_listener(lab, node_ns, f"{node_name}-host", ip))
            deployment.host_ips[node_name] = ip
        world = world_netns(lab.name)
        gateway = _start_listener(lab, world, f"{lab.name}-gateway", WORLD_UNDERLAY_IP)
        deployment.listener_pids.append(gateway)
        deployment.gateway_ip = WORLD_UNDERLAY_IP
        _wait_programmed(deployment)
    except BaseException:
        deployment.stop()
        raise
    return deployment


def _wait_programmed(d: Deployment) -> None:
    """Wait until the nodes serve the test's services, as Cilium's test waits for each
    service and NodePort to become ready: each echo ClusterIP and, on every node, its TCP
    NodePort answer, and the no-backends ClusterIP refuses. A new service is seen by each agent
    a moment after its creation (before its EndpointSlice, it is refused). Gives up silently
    after SERVICE_TIMEOUT: the scenarios then show what does not work."""
    Check = tuple[str, int, str | None]
    checks: list[Check] = [(d.service_ips[n], ECHO_TCP, n) for n in d.node_ports]
    checks += [(ip, ports[0], n) for n, ports in d.node_ports.items() for ip in d.host_ips.values()]
    if NO_BACKENDS in d.service_ips:
        checks.append((d.service_ips[NO_BACKENDS], ECHO_TCP, None))
    if d.local_node_port is not None:
        backend = d.service_backends[LOCAL]
        home = d.host_ips[d.pods[backend]["spec"]["nodeName"]]
        checks.append((home, d.local_node_port, backend))
    deadline = time.monotonic() + SERVICE_TIMEOUT

    def wait(check: Check) -> None:
        dest, port, answer = check
        while time.monotonic() < deadline:
            seen = probe_from(d, "client", dest, port, "tcp", timeout=1.0)
            if (seen.get("answer"), seen.get("reason")) == (
                (answer, None) if answer else (None, "refused")
            ):
                return
            time.sleep(0.2)

    with ThreadPoolExecutor(PROBES_AT_ONCE) as pool:
        list(pool.map(wait, checks))


def probe_from(
    deployment: Deployment,
    source: ProbeSource,
    dest: str,
    port: int,
    protocol: str,
    show_peer: bool = False,
    timeout: float = 2.0,
) -> dict[str, Any]:
    """Probe from inside the client pod (its namespace and node cgroup, as `pylium exec`
    would) or from the world namespace; returns the probe's JSON result. `show_peer`: see
    `pylium.lab.probe`."""
    if source == "world":
        ns, cg = world_netns(deployment.lab.name), None
    else:
        client = deployment.pods["client"]
        ns, cg = (
            deployment.client_netns(),
            Path(deployment.lab.node(client["spec"]["nodeName"]).cgroup),
        )

    def join_cgroup() -> None:
        if cg is not None:
            cgroup.add_pid(cg, os.getpid())

    argv = netns.nsenter_argv(
        ns,
        [sys.executable, "-m", "pylium.lab.probe", dest, str(port), "--protocol", protocol,
         "--timeout", str(timeout), *(["--show-peer"] if show_peer else [])],
    )  # fmt: skip
    proc = subprocess.run(
        argv, capture_output=True, text=True, preexec_fn=join_cgroup, timeout=timeout + 10
    )
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        result = {"ok": False, "answer": None, "reason": proc.stderr.strip() or "probe failed"}
    return result
