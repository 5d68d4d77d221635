"""Policy resolution with Cilium semantics: deny precedence, default-deny flags, entities, CIDR
identities, port ranges, ICMP, enforcement modes, audit, change notifications and the
incremental selector cache."""

from __future__ import annotations

from typing import Any

import pytest

from pylium.api import validate
from pylium.identity.numeric import IDENTITY_HOST, IDENTITY_WORLD, MIN_LOCAL_IDENTITY
from pylium.policy import (
    Direction,
    EndpointPolicy,
    Enforcement,
    PolicyConfig,
    PolicyKey,
    Repository,
    encode_key,
    trace,
)
from pylium.policy.selector import LabelSelector, Requirement
from tests.unit.policy.netpol_model import Model

SPEC: dict[str, Any] = {
    "serve": {"ports": [80, 81], "protocols": ["TCP", "UDP"]},
    "namespaces": {"x": {"labels": {"ns": "x"}}, "y": {"labels": {"ns": "y"}}},
    "pods": {
        "x/a": {"labels": {"pod": "a"}},
        "x/b": {"labels": {"pod": "b"}},
        "y/a": {"labels": {"pod": "a"}},
    },
}


def model(config: PolicyConfig | None = None) -> Model:
    return Model.build(SPEC, Repository(config))


def cnp(name: str, spec: dict[str, Any], namespace: str = "x") -> dict[str, Any]:
    kind = "CiliumNetworkPolicy" if namespace else "CiliumClusterwideNetworkPolicy"
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return validate({"apiVersion": "cilium.io/v2", "kind": kind, "metadata": meta, "spec": spec})


def verdict(m: Model, src: str, dst: str, port: int = 80, proto: str = "TCP") -> str:
    return trace(m.repo, src, dst, port, proto).verdict


def test_no_policy_allows_everything_and_enforces_nothing() -> None:
    """Default mode without policies: every direction open, nothing enforced."""
    m = model()
    result = trace(m.repo, "x/a", "y/a", 80, "TCP")
    assert result.verdict == "allowed"
    assert (result.egress.reason, result.ingress.reason) == ("not-enforced", "not-enforced")


def test_cnp_ingress_from_endpoints_is_namespace_scoped() -> None:
    """fromEndpoints {pod: b} in a CNP of x selects x/b only (not pods of y)."""
    m = model()
    m.repo.set_policy(
        cnp(
            "web",
            {
                "endpointSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"fromEndpoints": [{"matchLabels": {"pod": "b"}}]}],
            },
        )
    )
    allowed = trace(m.repo, "x/b", "x/a", 80, "TCP")
    assert allowed.ingress.rules == ("cnp:x/web spec.ingress[0]",)
    denied = trace(m.repo, "y/a", "x/a", 80, "TCP")
    assert (denied.verdict, denied.ingress.reason, denied.ingress.drop_reason) == (
        "denied",
        "default-deny",
        133,
    )
    assert denied.ingress.rules == ("cnp:x/web spec.ingress[0]",)
    assert verdict(m, "x/a", "x/b") == "allowed"  # x/b is not selected


def test_deny_takes_precedence_over_allow() -> None:
    """An ingressDeny from y wins over an allow from the whole cluster; x/b still passes."""
    m = model()
    m.repo.set_policy(
        cnp(
            "mixed",
            {
                "endpointSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"fromEntities": ["cluster"]}],
                "ingressDeny": [
                    {
                        "fromEndpoints": [
                            {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "y"}}
                        ],
                        "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
                    }
                ],
            },
        )
    )
    denied = trace(m.repo, "y/a", "x/a", 80, "TCP")
    assert (denied.ingress.reason, denied.ingress.rules, denied.ingress.drop_reason) == (
        "deny",
        ("cnp:x/mixed spec.ingressDeny[0]",),
        181,
    )
    assert verdict(m, "y/a", "x/a", 81) == "allowed"
    assert verdict(m, "x/b", "x/a", 80) == "allowed"
    keys = m.repo.policy("x/a").entries
    y_a = m.repo.endpoints()["y/a"].identity
    # The allow for y/a on every port is kept (80 is carved out by the narrower deny).
    assert keys[PolicyKey(Direction.INGRESS, y_a, 6, 80, 16)].deny
    assert not keys[PolicyKey(Direction.INGRESS, y_a, 0)].deny


def test_enable_default_deny_false_does_not_isolate() -> None:
    """A non-isolating egress deny blocks only what it names; everything else stays open."""
    m = model()
    m.repo.set_policy(
        cnp(
            "no-81",
            {
                "endpointSelector": {},
                "enableDefaultDeny": {"egress": False},
                "egressDeny": [{"toPorts": [{"ports": [{"port": "81", "protocol": "ANY"}]}]}],
            },
        )
    )
    assert verdict(m, "x/a", "y/a", 80, "UDP") == "allowed"
    assert verdict(m, "x/a", "y/a", 81, "UDP") == "denied"
    assert verdict(m, "y/a", "x/a", 81, "UDP") == "allowed"  # y is not selected
    assert m.repo.policy("x/a").decide(Direction.EGRESS, 0, "TCP", 80).rules == (
        "(no default-deny policy selects the endpoint)",
    )


def test_empty_rule_is_default_deny() -> None:
    """Cilium's `ingress: [{}]` isolates and allows nothing."""
    m = model()
    m.repo.set_policy(cnp("deny-all", {"endpointSelector": {}, "ingress": [{}]}))
    assert verdict(m, "y/a", "x/b") == "denied"
    assert verdict(m, "x/a", "y/a") == "allowed"


def test_entities_and_cidr_identities() -> None:
    """world/host entities map to reserved ids; toCIDRSet allocates node-local CIDR identities
    (for the prefixes left by `except`) and releases them with the policy."""
    m = model()
    m.repo.set_policy(
        cnp(
            "out",
            {
                "endpointSelector": {"matchLabels": {"pod": "a"}},
                "egress": [
                    {"toEntities": ["host"]},
                    {"toCIDRSet": [{"cidr": "192.168.0.0/16", "except": ["192.168.0.0/17"]}]},
                ],
            },
        )
    )
    egress = m.repo.policy("x/a")
    assert egress.decide(Direction.EGRESS, IDENTITY_HOST, "TCP", 22).verdict == "allowed"
    assert egress.decide(Direction.EGRESS, IDENTITY_WORLD, "TCP", 22).verdict == "denied"
    cidr_ids = {
        s.prefix.compressed: ids
        for s, ids in m.repo.selectors.selectors().items()
        if hasattr(s, "prefix")
    }
    assert list(cidr_ids) == ["192.168.128.0/17"]
    (local,) = cidr_ids["192.168.128.0/17"]
    assert local >= MIN_LOCAL_IDENTITY
    assert egress.decide(Direction.EGRESS, local, "UDP", 53).rules == ("cnp:x/out spec.egress[1]",)
    m.repo.delete_policy("CiliumNetworkPolicy", "x", "out")
    assert m.repo.selectors.labels_of(local) is None
    assert verdict(m, "x/a", "y/a") == "allowed"


def test_world_cidr_selects_world_identity() -> None:
    """toCIDR 0.0.0.0/0 reaches the world identity too."""
    m = model()
    m.repo.set_policy(cnp("w", {"endpointSelector": {}, "egress": [{"toCIDR": ["0.0.0.0/0"]}]}))
    assert m.repo.policy("x/a").decide(Direction.EGRESS, IDENTITY_WORLD, "TCP", 443).passes


def test_port_range_any_protocol_and_icmp() -> None:
    """toPorts 80-81/ANY opens TCP and UDP 80 and 81 (one /15 block each); ICMP by type."""
    m = model()
    m.repo.set_policy(
        cnp(
            "ports",
            {
                "endpointSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [
                    {"toPorts": [{"ports": [{"port": "80", "endPort": 81}]}]},
                    {"icmps": [{"fields": [{"type": "EchoRequest"}]}]},
                ],
            },
        )
    )
    for port in (80, 81):
        for proto in ("TCP", "UDP"):
            assert verdict(m, "y/a", "x/a", port, proto) == "allowed"
    assert verdict(m, "y/a", "x/a", 82) == "denied"
    policy = m.repo.policy("x/a")
    assert PolicyKey(Direction.INGRESS, 0, 6, 80, 15) in policy.entries
    assert policy.decide(Direction.INGRESS, 300, "ICMP", 8).passes
    assert not policy.decide(Direction.INGRESS, 300, "ICMP", 0).passes


def test_named_port_resolves_per_protocol() -> None:
    """A named port opens the port of that name and protocol only."""
    m = model()
    m.repo.set_policy(
        cnp(
            "named",
            {
                "endpointSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [
                    {"toPorts": [{"ports": [{"port": "serve-81-udp", "protocol": "UDP"}]}]}
                ],
            },
        )
    )
    assert verdict(m, "x/b", "x/a", 81, "UDP") == "allowed"
    assert verdict(m, "x/b", "x/a", 81, "TCP") == "denied"


def test_ccnp_applies_across_namespaces() -> None:
    """A cluster-wide policy selects pods of every namespace."""
    m = model()
    m.repo.set_policy(
        cnp("all-a", {"endpointSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{}]}, "")
    )
    assert verdict(m, "x/b", "x/a") == "denied"
    assert verdict(m, "x/b", "y/a") == "denied"
    assert m.repo.selected_endpoints(m.repo.rules().popitem()[0]) == ["x/a", "y/a"]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (Enforcement.DEFAULT, "allowed"),
        (Enforcement.ALWAYS, "denied"),
        (Enforcement.NEVER, "allowed"),
    ],
)
def test_enforcement_modes(mode: Enforcement, expected: str) -> None:
    """always = default deny without policy; never = no enforcement even with a deny-all."""
    m = model(PolicyConfig(enforcement=mode))
    assert verdict(m, "x/a", "x/b") == expected
    m.repo.set_policy(cnp("deny-all", {"endpointSelector": {}, "ingress": [{}]}))
    assert verdict(m, "y/a", "x/b") == ("allowed" if mode is Enforcement.NEVER else "denied")


def test_audit_mode_reports_but_passes() -> None:
    """In audit mode a policy drop becomes AUDIT, named by its rule, and the packet passes."""
    m = model(PolicyConfig(audit=True))
    m.repo.set_policy(cnp("deny-all", {"endpointSelector": {}, "ingress": [{}]}))
    result = trace(m.repo, "y/a", "x/b", 80, "TCP")
    assert (result.verdict, result.allowed) == ("audit", True)
    assert result.ingress.rules == ("cnp:x/deny-all spec.ingress[0]",)


def test_subscribers_hear_which_endpoints_changed() -> None:
    """A policy change notifies exactly the endpoints whose computed policy changed."""
    m = model()
    seen: list[dict[str, EndpointPolicy]] = []
    m.repo.subscribe(seen.append)
    m.repo.set_policy(
        cnp("deny-all", {"endpointSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{}]})
    )
    assert [sorted(c) for c in seen] == [["x/b"]]
    m.repo.set_policy(
        cnp("deny-all", {"endpointSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{}]})
    )
    assert len(seen) == 1  # an identical update changes nothing


def test_selector_cache_follows_namespace_labels_incrementally() -> None:
    """Relabelling a namespace moves its pods' identities in and out of a namespaceSelector's
    selection, and the cache reports just those identities."""
    m = model()
    m.repo.set_policy(
        validate(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "from-team", "namespace": "x"},
                "spec": {
                    "podSelector": {},
                    "ingress": [
                        {"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}
                    ],
                },
            }
        )
    )
    changes: list[tuple[frozenset[int], frozenset[int]]] = []
    m.repo.selectors.subscribe(lambda cs: changes.extend((c.added, c.removed) for c in cs))
    assert verdict(m, "y/a", "x/a") == "denied"
    old = m.repo.endpoints()["y/a"].identity
    m.set_namespace("y", {"ns": "y", "team": "blue"})
    new = m.repo.endpoints()["y/a"].identity
    assert new != old
    assert (frozenset([new]), frozenset()) in changes
    assert verdict(m, "y/a", "x/a") == "allowed"
    m.set_namespace("y", {"ns": "y"})
    assert (frozenset(), frozenset([new])) in changes
    assert verdict(m, "y/a", "x/a") == "denied"


def test_selector_matching_rules() -> None:
    """`any:` keys match any source; NotIn holds for an absent key; DoesNotExist too."""
    from pylium.identity.labels import Labels

    labels = Labels.of(["k8s:app=web", "k8s:io.kubernetes.pod.namespace=x"])
    assert LabelSelector(frozenset([Requirement("any:app", "In", frozenset(["web"]))])).matches(
        labels
    )
    assert not LabelSelector(frozenset([Requirement("reserved:app", "Exists")])).matches(labels)
    assert Requirement("k8s:tier", "NotIn", frozenset(["db"])).matches(labels)
    assert Requirement("k8s:tier", "DoesNotExist").matches(labels)
    assert not Requirement("k8s:app", "NotIn", frozenset(["web"])).matches(labels)


def test_cilium_cidr_rules_leave_pods_to_endpoint_selectors() -> None:
    """toCIDR covering the pod subnet selects no pod (Cilium); ipBlock does (Kubernetes)."""
    m = model()
    m.repo.set_policy(
        cnp(
            "cidr",
            {
                "endpointSelector": {"matchLabels": {"pod": "a"}},
                "egress": [{"toCIDR": ["10.0.0.0/8"]}],
            },
        )
    )
    assert verdict(m, "x/a", "x/b") == "denied"
    m.repo.set_policy(
        validate(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "block", "namespace": "x"},
                "spec": {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}],
                },
            }
        )
    )
    assert trace(m.repo, "x/a", "x/b", 80, "TCP").egress.rules == ("netpol:x/block spec.egress[0]",)


def test_map_rows_encode_every_entry() -> None:
    """The datapath's desired map content: one encoded row per entry, deny bit set on denies."""
    m = model()
    m.repo.set_policy(
        cnp("deny-all", {"endpointSelector": {}, "ingressDeny": [{"fromEntities": ["world"]}]})
    )
    policy = m.repo.policy("x/a")
    rows = policy.map_rows()
    assert len(rows) == len(policy.entries) > 0
    world_key = encode_key(PolicyKey(Direction.INGRESS, IDENTITY_WORLD, 0))
    assert rows[world_key][2] & 1 == 1
