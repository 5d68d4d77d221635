"""The connectivity test's scenarios: each a name and the probes it makes from the client pod.

A scenario lists its actions given a `Deployment`; it is skipped when the lab lacks what it
needs (a second node). `requires` names a feature a scenario depends on that is known to be
missing, so its failure says why instead of looking like a regression.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pylium.lab.connectivity.deploy import ECHO_TCP, ECHO_UDP, HOST_PORT, Deployment


@dataclass(frozen=True)
class Action:
    """One probe: from the client pod to `dest:port/protocol`, answered by `expect`."""

    target: str
    """What is probed, for people (a pod name, `world`, `<node> host`)."""
    dest: str
    port: int
    protocol: str
    expect: str


@dataclass(frozen=True)
class Scenario:
    """A named set of probes."""

    name: str
    description: str
    actions: Callable[[Deployment], list[Action]]
    """The probes; [] means the lab cannot run this scenario (it is skipped)."""
    requires: str | None = None
    """A missing feature this scenario needs, shown when it fails."""


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
        Action(f"service {name}", ip, port, protocol, name)
        for name, ip in sorted(d.service_ips.items())
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
        "client to each echo pod's ClusterIP Service (TCP and UDP; socket LB)",
        _services,
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
