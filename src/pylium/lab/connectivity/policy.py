"""The connectivity test's policy scenarios (as Cilium's): each applies a policy to the test
namespace, probes what it must allow and what it must drop, and removes it.

The runner runs them after the other scenarios, one at a time (`runner.run_policy_scenario`):
a policy would break the probes of a scenario running beside it. Every probe that must fail
expects DROPPED, with a short timeout (DENY_TIMEOUT), so a scenario costs ~0.5-1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, Protocol

from pylium.api import validate
from pylium.lab.connectivity.deploy import (
    ECHO_TCP,
    HOST_PORT,
    NAMESPACE,
    Deployment,
    ProbeSource,
)
from pylium.lab.connectivity.scenarios import DROPPED, PROBE_TIMEOUT, Action, Expect, Scenario
from pylium.lab.record import WORLD_CIDR, WORLD_IP, LabRecord
from pylium.store import NotFound, Object, open_store

DENY_TIMEOUT = 0.5
"""Seconds a probe that must be dropped waits: the lab answers in milliseconds."""
POLICY_TIMEOUT = 5.0
"""Seconds a policy (or its removal) may take to be enforced on every node."""
WITHOUT_POLICY = "!-(egress|ingress)"
"""The `--test` pattern that skips the policy scenarios: each is named after the direction it
restricts, as Cilium's (`client-egress`, `echo-ingress`, ...), no other scenario is."""


class Policies(Protocol):
    """Where policy scenarios put their policies (the lab's store; a fake in unit tests)."""

    def apply(self, objs: list[Object]) -> None:
        """Create or replace the objects."""

    def remove(self, objs: list[Object]) -> None:
        """Delete the objects (those already gone are fine)."""


@dataclass(frozen=True)
class StorePolicies:
    """The lab's store, written as `pylium apply` and `pylium delete` do."""

    lab: LabRecord

    def apply(self, objs: list[Object]) -> None:
        """Validate and store each object."""
        valid = [validate(o) for o in objs]

        async def work() -> None:
            store = open_store(self.lab.store)
            try:
                for obj in valid:
                    await store.apply(obj)
            finally:
                await store.close()

        asyncio.run(work())

    def remove(self, objs: list[Object]) -> None:
        """Delete each object if present."""

        async def work() -> None:
            store = open_store(self.lab.store)
            try:
                for obj in objs:
                    meta = obj["metadata"]
                    with contextlib.suppress(NotFound):
                        await store.delete(obj["kind"], meta["namespace"], meta["name"])
            finally:
                await store.close()

        asyncio.run(work())


def _cnp(name: str, pod: str, **rules: Any) -> Object:
    """A CiliumNetworkPolicy of the test namespace selecting one test pod by its name label."""
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"endpointSelector": {"matchLabels": {"name": pod}}, **rules},
    }


def _pod(name: str) -> dict[str, Any]:
    """A peer selector of one test pod."""
    return {"matchLabels": {"name": name}}


def _tcp(
    target: str, dest: str, port: int, expect: Expect, source: ProbeSource = "client"
) -> Action:
    """A TCP probe; one that must be dropped waits DENY_TIMEOUT only."""
    timeout = DENY_TIMEOUT if expect == DROPPED else PROBE_TIMEOUT
    return Action(target, dest, port, "tcp", expect, source, timeout=timeout)


def _to_world(d: Deployment, expect: Expect) -> Action:
    return _tcp("world", d.world_ip, 80, expect)


def _client_egress(d: Deployment) -> list[Action]:
    same, other = d.pod_ip("echo-same-node"), d.pod_ip("echo-other-node")
    if same is None or other is None:
        return []
    return [
        _tcp("echo-same-node", same, ECHO_TCP, "echo-same-node"),
        _tcp("echo-other-node", other, ECHO_TCP, DROPPED),
    ]


def _echo_ingress_policy(_d: Deployment) -> list[Object]:
    """A NetworkPolicy (the other scenarios' are Cilium's)."""
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "echo-ingress", "namespace": NAMESPACE},
            "spec": {
                "podSelector": _pod("echo-other-node"),
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": _pod("client")}]}],
            },
        }
    ]


def _echo_ingress(d: Deployment) -> list[Action]:
    """Without the policy the world reaches echo-other-node through its LoadBalancer IP (routed
    to node 1, so forwarded from node to node)."""
    name = "echo-other-node"
    ip = d.pod_ip(name)
    if ip is None or name not in d.lb_ips:
        return []
    return [
        _tcp(name, ip, ECHO_TCP, name),
        _tcp(f"{name} LoadBalancer", d.lb_ips[name], ECHO_TCP, DROPPED, "world"),
    ]


def _echo_ingress_deny(d: Deployment) -> list[Action]:
    name = "echo-same-node"
    ip = d.pod_ip(name)
    if ip is None or name not in d.lb_ips:
        return []
    return [
        _tcp(f"{name} LoadBalancer", d.lb_ips[name], ECHO_TCP, name, "world"),
        _tcp(name, ip, ECHO_TCP, DROPPED),
    ]


def _to_entities_world(d: Deployment) -> list[Action]:
    ip = d.pod_ip("echo-same-node")
    if ip is None:
        return []
    return [_to_world(d, f"{d.lab.name}-world"), _tcp("echo-same-node", ip, ECHO_TCP, DROPPED)]


def _to_entities_cluster(d: Deployment) -> list[Action]:
    ip = d.pod_ip("echo-other-node")
    if ip is None:
        return []
    return [_tcp("echo-other-node", ip, ECHO_TCP, "echo-other-node"), _to_world(d, DROPPED)]


def _to_cidr(d: Deployment) -> list[Action]:
    if d.gateway_ip is None:
        return []
    gateway = _tcp("gateway", d.gateway_ip, HOST_PORT, f"{d.lab.name}-gateway")
    return [gateway, _to_world(d, DROPPED)]


POLICY_SCENARIOS: list[Scenario] = [
    Scenario(
        "client-egress",
        "client egress allowed to echo-same-node only (CNP toEndpoints): echo-other-node dropped",
        _client_egress,
        policy=lambda _d: [
            _cnp("client-egress", "client", egress=[{"toEndpoints": [_pod("echo-same-node")]}])
        ],
    ),
    Scenario(
        "echo-ingress",
        "echo-other-node ingress allowed from the client only (NetworkPolicy): the world's "
        "connection through its LoadBalancer IP dropped",
        _echo_ingress,
        policy=_echo_ingress_policy,
    ),
    Scenario(
        "echo-ingress-deny",
        "echo-same-node ingress allowed from all entities, denied from the client (CNP "
        "ingressDeny): the world answered, the client dropped (deny wins)",
        _echo_ingress_deny,
        policy=lambda _d: [
            _cnp(
                "echo-ingress-deny",
                "echo-same-node",
                ingress=[{"fromEntities": ["all"]}],
                ingressDeny=[{"fromEndpoints": [_pod("client")]}],
            )
        ],
    ),
    Scenario(
        "client-egress-to-entities-world",
        "client egress to the world entity only: the world answered, echo-same-node dropped",
        _to_entities_world,
        policy=lambda _d: [
            _cnp("client-egress-to-entities-world", "client", egress=[{"toEntities": ["world"]}])
        ],
    ),
    Scenario(
        "client-egress-to-entities-cluster",
        "client egress to the cluster entity only: echo-other-node answered, the world dropped",
        _to_entities_cluster,
        policy=lambda _d: [
            _cnp(
                "client-egress-to-entities-cluster", "client", egress=[{"toEntities": ["cluster"]}]
            )
        ],
    ),
    Scenario(
        "client-egress-to-cidr",
        f"client egress to {WORLD_CIDR} except {WORLD_IP}/32 (toCIDRSet) and to the gateway "
        "(toCIDR): the gateway answered, the world server dropped",
        _to_cidr,
        policy=lambda d: [
            _cnp(
                "client-egress-to-cidr",
                "client",
                egress=[
                    {"toCIDRSet": [{"cidr": WORLD_CIDR, "except": [f"{WORLD_IP}/32"]}]},
                    {"toCIDR": [f"{d.gateway_ip}/32"]},
                ],
            )
        ],
    ),
]
