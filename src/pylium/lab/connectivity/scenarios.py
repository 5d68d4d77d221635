"""The connectivity test's scenarios: each a name and the probes it makes, from the client pod
or from the lab's world namespace.

A scenario lists its actions given a `Deployment`; it is skipped when the lab lacks what it
needs (a second node). A policy scenario (`policy`, see `connectivity.policy`) also names the
policies it applies while it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pylium.lab.connectivity.deploy import (
    AFFINITY,
    ECHO_TCP,
    ECHO_UDP,
    HOST_PORT,
    LOCAL,
    NO_BACKENDS,
    Deployment,
    ProbeSource,
)
from pylium.lab.record import WORLD_UNDERLAY_IP
from pylium.store import Object


@dataclass(frozen=True)
class Unanswered:
    """The probe must fail this way (the probe's `reason`)."""

    reason: str


REFUSED = Unanswered("refused")
"""Refused at once (TCP reset, ICMP port unreachable), not timed out."""
DROPPED = Unanswered("timeout")
"""Silently dropped (TCP)."""
Expect = str | frozenset[str] | Unanswered
"""The answer, one of several answers (any backend of a service), or a failure."""
PROBE_TIMEOUT = 2.0
"""Seconds a probe waits unless its action says otherwise."""


@dataclass(frozen=True)
class Action:
    """One probe: from `source` to `dest:port/protocol`, answered as `expect` says."""

    target: str
    """What is probed, for people (a pod name, `world`, `<node> host`)."""
    dest: str
    port: int
    protocol: str
    expect: Expect
    source: ProbeSource = "client"
    show_peer: bool = False
    """Ask for the client address the server saw (the answer becomes `NAME peer=IP`)."""
    timeout: float = PROBE_TIMEOUT
    """Seconds the probe waits: a DROPPED probe lasts this long."""


@dataclass(frozen=True)
class Scenario:
    """A named set of probes."""

    name: str
    description: str
    actions: Callable[[Deployment], list[Action]]
    """The probes; [] means the lab cannot run this scenario (it is skipped)."""
    one_answer: bool = False
    """Every probe must get the same answer (session affinity); they run one at a time."""
    policy: Callable[[Deployment], list[Object]] | None = None
    """Policies applied to the test namespace while the scenario runs: it runs alone, after
    the others, whose probes they would break."""


def _echo(name: str) -> Callable[[Deployment], list[Action]]:
    def actions(d: Deployment) -> list[Action]:
        ip = d.pod_ip(name)
        if ip is None:
            return []
        return [
            Action(name, ip, ECHO_TCP, "tcp", name),
            Action(name, ip, ECHO_UDP, "udp", name),
        ]

    return actions


def _services(d: Deployment) -> list[Action]:
    """Each echo pod through its ClusterIP: the pod answers, whichever node it is on."""
    return [
        Action(f"service {name}", d.service_ips[name], port, protocol, name)
        for name in sorted(d.pods)
        if name in d.service_ips
        for port, protocol in ((ECHO_TCP, "tcp"), (ECHO_UDP, "udp"))
    ]


def _world(d: Deployment) -> list[Action]:
    answer = f"{d.lab.name}-world"
    return [
        Action("world", d.world_ip, 80, "tcp", answer),
        Action("world", d.world_ip, 53, "udp", answer),
    ]


def _hosts(d: Deployment) -> list[Action]:
    return [
        Action(f"{node} host", ip, HOST_PORT, "tcp", f"{node}-host")
        for node, ip in sorted(d.host_ips.items())
    ]


def _echo_services(d: Deployment) -> list[str]:
    """The echo pods' LoadBalancer Services (one per echo pod)."""
    return sorted(d.node_ports)


def _node_ports(
    source: ProbeSource, local_and_one_remote: bool
) -> Callable[[Deployment], list[Action]]:
    """Each echo service's NodePort on node addresses: every node, or the client's node and
    one other (as Cilium's pod-to-local/remote-nodeport)."""

    def actions(d: Deployment) -> list[Action]:
        nodes = sorted(d.host_ips)
        if not d.node_ports:
            return []
        if local_and_one_remote:
            local = d.pods["client"]["spec"]["nodeName"]
            nodes = [local, *[n for n in nodes if n != local][:1]]
        return [
            Action(f"{name} via {node}", d.host_ips[node], port, protocol, name, source)
            for node in nodes
            for name in _echo_services(d)
            for port, protocol in zip(d.node_ports[name], ("tcp", "udp"), strict=True)
        ]

    return actions


def _from_world(
    addresses: Callable[[Deployment, str], list[str]],
) -> Callable[[Deployment], list[Action]]:
    """Each echo service on its `addresses` (LB IP, external IPs), from the world."""

    def actions(d: Deployment) -> list[Action]:
        return [
            Action(name, ip, port, protocol, name, "world")
            for name in _echo_services(d)
            for ip in addresses(d, name)
            for port, protocol in ((ECHO_TCP, "tcp"), (ECHO_UDP, "udp"))
        ]

    return actions


AFFINITY_PROBES = 8


def _affinity(d: Deployment) -> list[Action]:
    """Repeated connects to the ClientIP-affinity service: any echo pod, always the same one."""
    echoes = frozenset(n for n in d.pods if n != "client")
    ip = d.service_ips.get(AFFINITY)
    if ip is None:
        return []
    return [Action(AFFINITY, ip, ECHO_TCP, "tcp", echoes) for _ in range(AFFINITY_PROBES)]


def _no_backends(d: Deployment) -> list[Action]:
    ip = d.service_ips.get(NO_BACKENDS)
    if ip is None:
        return []
    return [
        Action(NO_BACKENDS, ip, port, protocol, REFUSED)
        for port, protocol in ((ECHO_TCP, "tcp"), (ECHO_UDP, "udp"))
    ]


def _local_nodeport(d: Deployment) -> list[Action]:
    """The externalTrafficPolicy=Local NodePort from the world: the backend's node answers and
    keeps the world's address; every other node drops (kube-proxy's and Cilium's behaviour)."""
    if d.local_node_port is None:
        return []
    backend = d.service_backends[LOCAL]
    home = d.pods[backend]["spec"]["nodeName"]
    port = d.local_node_port
    answer = f"{backend} peer={WORLD_UNDERLAY_IP}"
    return [
        Action(f"{LOCAL} via {node}", ip, port, "tcp", answer if node == home else DROPPED,
               "world", show_peer=True)
        for node, ip in sorted(d.host_ips.items())
    ]  # fmt: skip


SCENARIOS: list[Scenario] = [
    Scenario(
        "pod-to-pod-same-node",
        "client to an echo pod on its own node (TCP and UDP)",
        _echo("echo-same-node"),
    ),
    Scenario(
        "pod-to-pod-other-node",
        "client to an echo pod on another node (TCP and UDP)",
        _echo("echo-other-node"),
    ),
    Scenario(
        "pod-to-service",
        "client to each echo pod's ClusterIP Service (TCP and UDP)",
        _services,
    ),
    Scenario(
        "pod-to-nodeport",
        "client to each echo service's NodePort on its own node and on another node",
        _node_ports("client", local_and_one_remote=True),
    ),
    Scenario(
        "world-to-nodeport",
        "the world to each echo service's NodePort on every node",
        _node_ports("world", local_and_one_remote=False),
    ),
    Scenario(
        "world-to-loadbalancer",
        "the world to each echo service's LoadBalancer IP (routed to node 1)",
        _from_world(lambda d, name: [d.lb_ips[name]]),
    ),
    Scenario(
        "world-to-externalip",
        "the world to each echo service's external IP (routed to node 1)",
        _from_world(lambda d, name: d.external_ips[name]),
    ),
    Scenario(
        "world-to-local-nodeport",
        "the world to an externalTrafficPolicy=Local NodePort: its backend's node answers and "
        "sees the world's address, the other nodes drop",
        _local_nodeport,
    ),
    Scenario(
        "session-affinity",
        f"client to a ClientIP-affinity service of all echo pods, {AFFINITY_PROBES} times: "
        "one pod answers all",
        _affinity,
        one_answer=True,
    ),
    Scenario(
        "service-without-backends",
        "client to a service without endpoints: refused at once (TCP and UDP), no timeout",
        _no_backends,
    ),
    Scenario(
        "pod-to-world",
        "client to an address outside the cluster (the lab's world namespace)",
        _world,
    ),
    Scenario(
        "pod-to-host",
        "client to every node's InternalIP (a listener in each node namespace)",
        _hosts,
    ),
]
