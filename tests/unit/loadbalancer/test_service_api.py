"""Service and EndpointSlice validation: good objects pass, bad ones name the field."""

from __future__ import annotations

from typing import Any

import pytest

from pylium.api import InvalidObject, resolve_resource, validate


def svc(**spec: Any) -> dict[str, Any]:
    spec.setdefault("ports", [{"port": 80}])
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}, "spec": spec}


def eps(**fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "svc-1", "labels": {"kubernetes.io/service-name": "svc"}},
        "addressType": "IPv4",
        **fields,
    }


VALID = [
    svc(
        type="LoadBalancer",
        clusterIP="10.96.0.1",
        externalIPs=["192.0.2.1"],
        sessionAffinity="ClientIP",
        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}},
        externalTrafficPolicy="Local",
        internalTrafficPolicy="Local",
        ipFamilies=["IPv4"],
        ports=[
            {"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080},
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
        ],
    ),
    {**svc(type="LoadBalancer"), "status": {"loadBalancer": {"ingress": [{"ip": "172.18.0.1"}]}}},
    eps(
        endpoints=[
            {
                "addresses": ["10.244.1.5"],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": "lab-node1",
                "targetRef": {"kind": "Pod", "name": "web", "namespace": "default"},
            }
        ],
        ports=[{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "", "port": 9090}],
    ),
    {
        "apiVersion": "cilium.io/v2alpha1",
        "kind": "CiliumLoadBalancerIPPool",
        "metadata": {"name": "lab"},
        "spec": {"blocks": [{"cidr": "172.18.255.0/24"}]},
    },
]

INVALID = [
    (
        svc(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 0}}),
        "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 0: must be greater"
        " than 0 and less than 86400",
    ),
    (
        svc(sessionAffinityConfig={"clientIP": {"timeoutSeconds": 10}}),
        "spec.sessionAffinityConfig: Forbidden: must not be set when `sessionAffinity` is not"
        " 'ClientIP'",
    ),
    (svc(externalIPs=["192.0.2.1", "192.0.2.1"]), "spec.externalIPs[1]: Duplicate value"),
    (svc(externalIPs=["nope"]), 'spec.externalIPs[0]: Invalid value: "nope"'),
    (
        svc(externalTrafficPolicy="Local"),
        "spec.externalTrafficPolicy: Invalid value: may only be set for externally-accessible"
        " services",
    ),
    (
        svc(internalTrafficPolicy="Nearby"),
        'spec.internalTrafficPolicy: Unsupported value: "Nearby"',
    ),
    (svc(ipFamilies=["IPv6"]), 'spec.ipFamilies[0]: Unsupported value: "IPv6"'),
    (
        svc(type="NodePort", clusterIP="None"),
        "spec.clusterIP: Invalid value: \"None\": may not be set to 'None' for NodePort services",
    ),
    (
        svc(
            type="NodePort",
            ports=[
                {"name": "a", "port": 80, "nodePort": 30080},
                {"name": "b", "port": 81, "nodePort": 30080},
            ],
        ),
        'spec.ports[1].nodePort: Duplicate value: "30080/TCP"',
    ),
    (
        svc(clusterIP="10.96.0.1", clusterIPs=["10.96.0.2"]),
        'spec.clusterIPs[0]: Invalid value: "10.96.0.2": must match `clusterIP`',
    ),
    (
        {**svc(type="LoadBalancer"), "status": {"loadBalancer": {"ingress": [{"ip": "x"}]}}},
        'status.loadBalancer.ingress[0].ip: Invalid value: "x"',
    ),
    (eps(endpoints=[{"addresses": []}]), "endpoints[0].addresses: Required value"),
    (
        eps(endpoints=[{"addresses": ["fd00::1"]}]),
        'endpoints[0].addresses[0]: Invalid value: "fd00::1": must be a valid IPv4 address',
    ),
    (eps(addressType="IPv5"), 'addressType: Unsupported value: "IPv5"'),
    (
        eps(ports=[{"name": "http", "port": 80}, {"name": "http", "port": 81}]),
        'ports[1].name: Duplicate value: "http"',
    ),
    (eps(ports=[{"name": "http", "port": 0}]), "ports[0].port: must be between 1 and 65535"),
    (
        eps(endpoints=[{"addresses": ["10.0.0.1"], "conditions": {"ready": "yes"}}]),
        "endpoints[0].conditions.ready: must be a boolean",
    ),
]


@pytest.mark.parametrize("obj", VALID)
def test_valid_objects_pass(obj: dict[str, Any]) -> None:
    """A complete Service, EndpointSlice and pool validate unchanged but for the namespace."""
    out = validate(obj)
    assert {k: v for k, v in out.items() if k != "metadata"} == {
        k: v for k, v in obj.items() if k != "metadata"
    }


@pytest.mark.parametrize(("obj", "expected"), INVALID)
def test_invalid_object_names_the_field(obj: dict[str, Any], expected: str) -> None:
    """The error names the bad field with a Kubernetes-style message."""
    with pytest.raises(InvalidObject) as err:
        validate(obj)
    assert expected in str(err.value)


def test_resource_names() -> None:
    """`pylium get endpointslices|eps|ippools` resolve."""
    assert resolve_resource("eps").kind == "EndpointSlice"
    assert resolve_resource("endpointslices").namespaced
    assert resolve_resource("ippools").kind == "CiliumLoadBalancerIPPool"
