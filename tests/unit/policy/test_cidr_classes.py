"""CIDR classes (bpf/lib/policy.h): an ipBlock matches any address in it, pod addresses
included, one pod at a time even when pods share an identity; Cilium's CIDR rules match only
peers outside the cluster; the longest rule prefix holding an address decides its class."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

from pylium.api import validate
from pylium.identity.numeric import IDENTITY_WORLD
from pylium.policy import Direction, Repository, trace
from tests.unit.policy.netpol_model import Model

SPEC: dict[str, Any] = {
    "serve": {"ports": [80], "protocols": ["TCP"]},
    "namespaces": {"x": {}},
    "pods": {
        "x/a": {"labels": {"pod": "a"}},
        "x/b": {"labels": {"pod": "b"}},
        "x/twin": {"labels": {"pod": "b"}},  # the same identity as x/b
    },
}


def ingress_from(block: dict[str, Any]) -> dict[str, Any]:
    return validate(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "from-block", "namespace": "x"},
            "spec": {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"ipBlock": block}]}],
            },
        }
    )


def egress_cnp(rule: dict[str, Any]) -> dict[str, Any]:
    return validate(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "out", "namespace": "x"},
            "spec": {"endpointSelector": {"matchLabels": {"pod": "a"}}, "egress": [rule]},
        }
    )


def allowed(m: Model, src: str) -> bool:
    return trace(m.repo, src, "x/a", 80, "TCP").allowed


def test_that_an_ipblock_of_one_pod_ip_admits_that_pod_and_not_its_identity_twin() -> None:
    m = Model.build(SPEC, Repository())
    m.repo.set_policy(ingress_from({"cidr": f"{m.ips['x/b']}/32"}))
    assert (allowed(m, "x/b"), allowed(m, "x/twin")) == (True, False)


def test_that_an_ipblock_except_closes_one_pod_and_not_its_identity_twin() -> None:
    m = Model.build(SPEC, Repository())
    m.repo.set_policy(ingress_from({"cidr": "10.0.0.0/8", "except": [f"{m.ips['x/b']}/32"]}))
    assert (allowed(m, "x/b"), allowed(m, "x/twin")) == (False, True)
    # The datapath's map: every part the except left, each with two distinct class ids.
    classes = m.repo.cidr_classes()
    assert len(classes) == 24 and IPv4Network(f"{m.ips['x/b']}/32") not in classes
    assert len({i for ids in classes.values() for i in ids}) == 48


def test_that_cilium_cidr_rules_match_world_addresses_with_except_but_no_pod() -> None:
    m = Model.build(SPEC, Repository())
    m.repo.set_policy(
        egress_cnp({"toCIDRSet": [{"cidr": "203.0.113.0/24", "except": ["203.0.113.1/32"]}]})
    )
    m.repo.set_policy(
        validate(
            {
                **egress_cnp({"toCIDR": ["10.0.0.0/8"]}),
                "metadata": {"name": "pods", "namespace": "x"},
            }
        )
    )
    policy = m.repo.policy("x/a")

    def world(ip: str) -> bool:
        cidr = m.repo.cidr_class(IPv4Address(ip), IDENTITY_WORLD)
        return policy.decide(Direction.EGRESS, IDENTITY_WORLD, "TCP", 80, cidr).passes

    assert (world("203.0.113.2"), world("203.0.113.1"), world("198.51.100.1")) == (
        True,
        False,
        False,
    )
    assert not trace(m.repo, "x/a", "x/b", 80, "TCP").allowed  # a pod address in 10/8
    # An address outside the cluster in 10/8 (the world identity) is matched.
    assert world("10.9.9.9")


def test_that_the_classes_go_with_the_last_rule_naming_their_prefix() -> None:
    m = Model.build(SPEC, Repository())
    m.repo.set_policy(ingress_from({"cidr": "10.0.0.0/8"}))
    assert list(m.repo.cidr_classes()) == [IPv4Network("10.0.0.0/8")]
    m.repo.delete_policy("NetworkPolicy", "x", "from-block")
    assert m.repo.cidr_classes() == {}
    assert m.repo.cidr_class(IPv4Address(m.ips["x/b"]), 300) == 0
