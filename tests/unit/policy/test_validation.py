"""CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy / NetworkPolicy validation names the
bad field."""

from __future__ import annotations

from typing import Any

import pytest

from pylium.api import InvalidObject, resolve_resource, validate


def cnp(spec: dict[str, Any], kind: str = "CiliumNetworkPolicy") -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": kind,
        "metadata": {"name": "p", "namespace": "x"},
        "spec": spec,
    }


SELECT_ALL: dict[str, Any] = {"endpointSelector": {}}


def test_valid_cnp_with_every_l3_l4_field_is_accepted() -> None:
    """A rule using every modelled field validates and keeps its namespace."""
    obj = cnp(
        {
            "endpointSelector": {"matchLabels": {"k8s:app": "web"}},
            "ingress": [
                {
                    "fromEndpoints": [
                        {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]}
                    ],
                    "fromCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}],
                    "fromEntities": ["world", "cluster", "host", "remote-node", "all"],
                    "toPorts": [{"ports": [{"port": "8000", "endPort": 8100, "protocol": "ANY"}]}],
                },
                {"fromCIDR": ["192.168.0.0/24"], "icmps": [{"fields": [{"type": "EchoRequest"}]}]},
            ],
            "egressDeny": [{"toEntities": ["world"]}],
            "enableDefaultDeny": {"ingress": False},
        }
    )
    assert validate(obj)["metadata"]["namespace"] == "x"


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        (
            {**SELECT_ALL, "ingress": [{"toPorts": [{"ports": [{"port": "80", "endPort": 79}]}]}]},
            "spec.ingress[0].toPorts[0].ports[0].endPort: must be >= port",
        ),
        (
            {**SELECT_ALL, "egress": [{"toPorts": [{"ports": [{"port": "http", "endPort": 90}]}]}]},
            "spec.egress[0].toPorts[0].ports[0].endPort: Forbidden",
        ),
        (
            {**SELECT_ALL, "egress": [{"toPorts": [{"ports": [{"port": "70000"}]}]}]},
            "spec.egress[0].toPorts[0].ports[0].port: must be between 0 and 65535",
        ),
        (
            {**SELECT_ALL, "ingress": [{"fromEntities": ["moon"]}]},
            'spec.ingress[0].fromEntities[0]: Unsupported value: "moon"',
        ),
        (
            {**SELECT_ALL, "ingressDeny": [{"fromCIDRSet": [{"cidr": "10.0.0.0/33"}]}]},
            "spec.ingressDeny[0].fromCIDRSet[0].cidr: Invalid value",
        ),
        (
            {**SELECT_ALL, "ingress": [{"toPorts": [{}], "icmps": [{"fields": [{"type": 8}]}]}]},
            "spec.ingress[0].icmps: Forbidden: toPorts and icmps cannot be combined",
        ),
        (
            {**SELECT_ALL, "ingress": [{"icmps": [{"fields": [{"type": "Ping"}]}]}]},
            'spec.ingress[0].icmps[0].fields[0].type: Unsupported value: "Ping"',
        ),
        ({"ingress": []}, "spec.endpointSelector: Required value"),
        (
            {**SELECT_ALL, "egress": [{"toPorts": [{"ports": [{"protocol": "X"}]}]}]},
            "spec.egress[0].toPorts[0].ports[0].protocol: Unsupported value",
        ),
        (  # L7 and FQDN rules would be ignored, i.e. allow more: refused instead
            {**SELECT_ALL, "ingress": [{"toPorts": [{"rules": {"http": [{"method": "GET"}]}}]}]},
            "spec.ingress[0].toPorts[0].rules: Forbidden: not supported by pylium",
        ),
        (
            {**SELECT_ALL, "egress": [{"toFQDNs": [{"matchName": "example.com"}]}]},
            "spec.egress[0].toFQDNs: Forbidden: not supported by pylium",
        ),
        (
            {**SELECT_ALL, "ingress": [{"fromRequires": [{"matchLabels": {"env": "prod"}}]}]},
            "spec.ingress[0].fromRequires: Forbidden",
        ),
    ],
)
def test_invalid_cnp_names_the_field(spec: dict[str, Any], error: str) -> None:
    """Each broken rule is rejected with the path of the broken field."""
    with pytest.raises(InvalidObject) as exc:
        validate(cnp(spec))
    assert error in str(exc.value)


def test_cnp_needs_spec_or_specs_and_accepts_specs() -> None:
    """`specs` alone is a valid policy; neither is an error."""
    obj = cnp(SELECT_ALL)
    del obj["spec"]
    with pytest.raises(InvalidObject, match="spec: Required value"):
        validate(obj)
    obj["specs"] = [SELECT_ALL, {"endpointSelector": {}, "ingress": [{}]}]
    validate(obj)


def test_ccnp_is_cluster_scoped_and_named_by_short_names() -> None:
    """CCNP drops metadata.namespace; cnp/ccnp resolve to their kinds."""
    stored = validate(cnp(SELECT_ALL, kind="CiliumClusterwideNetworkPolicy"))
    assert "namespace" not in stored["metadata"]
    assert resolve_resource("ccnp").kind == "CiliumClusterwideNetworkPolicy"
    assert resolve_resource("cnp").kind == "CiliumNetworkPolicy"


def test_networkpolicy_endport_below_port_names_the_field() -> None:
    """The Kubernetes kind reports endPort < port at the port's path."""
    obj = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]},
    }
    with pytest.raises(InvalidObject, match=r"spec\.ingress\[0\]\.ports\[0\]\.endPort"):
        validate(obj)
