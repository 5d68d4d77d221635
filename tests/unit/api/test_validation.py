"""validate(): good objects pass (normalised, unknown fields kept); bad ones name the field."""

from __future__ import annotations

from typing import Any

import pytest

import pylium.api
from pylium.api import InvalidObject, UnknownKind, resolve_resource, validate


def pod(name: str = "web", **spec: Any) -> dict[str, Any]:
    spec.setdefault("containers", [{"name": "c", "image": "busybox"}])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def container(**fields: Any) -> dict[str, Any]:
    return {"name": "c", "image": "busybox", **fields}


def svc(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}, "spec": spec}


def netpol(**spec: Any) -> dict[str, Any]:
    spec.setdefault("podSelector", {})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "np"},
        "spec": spec,
    }


def cilium_node(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNode",
        "metadata": {"name": "lab-node1"},
        "spec": spec,
    }


INVALID = [
    (
        pod(containers=[container(ports=[{"containerPort": 70000}])]),
        'Pod "web" is invalid: spec.containers[0].ports[0].containerPort: '
        "must be between 1 and 65535",
    ),
    (
        pod(containers=[container(ports=[{"containerPort": "80"}])]),
        "spec.containers[0].ports[0].containerPort: must be an integer",
    ),
    (
        pod(containers=[container(ports=[{"containerPort": 80, "protocol": "ICMP"}])]),
        'spec.containers[0].ports[0].protocol: Unsupported value: "ICMP": '
        'supported values: "TCP", "UDP", "SCTP"',
    ),
    (
        pod(containers=[container(), container(image="other")]),
        'spec.containers[1].name: Duplicate value: "c"',
    ),
    (pod(containers=[]), "spec.containers: Required value"),
    (pod(containers=[{"name": "c"}]), "spec.containers[0].image: Required value"),
    (pod(name="Web_1"), 'metadata.name: Invalid value: "Web_1": a lowercase RFC 1123 subdomain'),
    (pod(nodeName="Node 1"), 'spec.nodeName: Invalid value: "Node 1"'),
    (
        {**pod(), "status": {"podIP": "10.0.0.300"}},
        'status.podIP: Invalid value: "10.0.0.300": must be a valid IP address',
    ),
    (
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}},
        'metadata.name: Invalid value: "a.b": a lowercase RFC 1123 label',
    ),
    (
        {**pod(), "metadata": {"name": "web", "labels": {"bad key!": "x"}}},
        'metadata.labels[bad key!]: Invalid value: "bad key!"',
    ),
    (svc(selector={"app": "web"}), "spec.ports: Required value"),
    (
        svc(ports=[{"port": 80}, {"port": 81}]),
        "spec.ports[0].name: Required value",
    ),
    (
        svc(ports=[{"port": 80, "targetPort": "Bad_Name"}]),
        'spec.ports[0].targetPort: Invalid value: "Bad_Name": a port name',
    ),
    (
        svc(ports=[{"port": 80, "nodePort": 30080}]),
        "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
    ),
    (svc(clusterIP="1.2.3", ports=[{"port": 80}]), 'spec.clusterIP: Invalid value: "1.2.3"'),
    (
        netpol(ingress=[{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]),
        'spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "10.0.0.0/33"',
    ),
    (
        netpol(egress=[{"to": [{}]}]),
        "spec.egress[0].to[0]: Required value: must specify a peer",
    ),
    (
        netpol(ingress=[{"ports": [{"port": 80, "endPort": 70}]}]),
        "spec.ingress[0].ports[0].endPort: Invalid value",
    ),
    (
        netpol(podSelector={"matchExpressions": [{"key": "a", "operator": "In"}]}),
        "spec.podSelector.matchExpressions[0].values: Required value",
    ),
    (netpol(policyTypes=["Ingres"]), 'spec.policyTypes[0]: Unsupported value: "Ingres"'),
    (
        cilium_node(ipam={"podCIDRs": ["10.244.1.0"]}),
        'spec.ipam.podCIDRs[0]: Invalid value: "10.244.1.0": must be a CIDR',
    ),
    (
        cilium_node(ipam={"pool": {"bogus": {"owner": "x"}}}),
        'spec.ipam.pool[bogus]: Invalid value: "bogus": must be a valid IP address',
    ),
    ({"kind": "Pod", "metadata": {"name": "x"}}, 'Pod "x" is invalid: apiVersion: Required value'),
    ({"apiVersion": "v1", "kind": "Pod"}, "metadata: Required value; spec: Required value"),
]


@pytest.mark.parametrize(("obj", "expected"), INVALID)
def test_invalid_object_names_the_field(obj: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidObject) as info:
        validate(obj)
    assert expected in str(info.value)


def test_union_failure_reports_one_error() -> None:
    with pytest.raises(InvalidObject) as info:
        validate(svc(ports=[{"port": 80, "targetPort": "Bad_Name"}]))
    assert [e.path for e in info.value.errors] == ["spec.ports[0].targetPort"]


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(UnknownKind, match='no matches for kind "Pod" in version "v2"'):
        validate({"apiVersion": "v2", "kind": "Pod", "metadata": {"name": "x"}})


def test_valid_pod_defaults_namespace_and_keeps_unknown_fields() -> None:
    obj = pod(containers=[container(ports=[{"containerPort": 8080, "name": "http"}])])
    obj["spec"]["restartPolicy"] = "Always"
    obj["metadata"]["labels"] = {"app": "web", "k8s.io/role": "x"}
    out = validate(obj)
    assert out["metadata"]["namespace"] == "default"
    assert out["spec"]["restartPolicy"] == "Always"
    assert "namespace" not in obj["metadata"]  # the input is not modified


def test_cluster_scoped_kind_drops_namespace() -> None:
    obj = cilium_node(ipam={"podCIDRs": ["10.244.1.0/24"], "pool": {"10.244.1.5": {"owner": "p"}}})
    obj["metadata"]["namespace"] = "default"
    obj["status"] = {"ipam": {"used": {"10.244.1.5": {"owner": "p"}}, "available": 250}}
    out = validate(obj)
    assert "namespace" not in out["metadata"]
    assert out["status"]["ipam"]["available"] == 250


@pytest.mark.parametrize(
    "obj",
    [
        svc(type="NodePort", selector={"app": "web"}, ports=[{"port": 80, "nodePort": 30080}]),
        svc(clusterIP="None", selector={"app": "web"}),
        svc(type="ExternalName", externalName="example.com"),
        netpol(
            policyTypes=["Ingress", "Egress"],
            ingress=[
                {
                    "from": [
                        {"podSelector": {"matchLabels": {"app": "a"}}, "namespaceSelector": {}},
                        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                    ],
                    "ports": [{"port": "http"}, {"port": 8000, "endPort": 8080, "protocol": "UDP"}],
                }
            ],
            egress=[{}],
        ),
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "lab-node1"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}},
    ],
)
def test_valid_objects_pass(obj: dict[str, Any]) -> None:
    assert validate(obj)["spec" if "spec" in obj else "metadata"] is not None


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("pods", "Pod"),
        ("po", "Pod"),
        ("Pod", "Pod"),
        ("svc", "Service"),
        ("ns", "Namespace"),
        ("no", "Node"),
        ("netpol", "NetworkPolicy"),
        ("cn", "CiliumNode"),
        ("ciliumnodes.cilium.io", "CiliumNode"),
    ],
)
def test_resolve_resource_names(name: str, kind: str) -> None:
    assert resolve_resource(name).kind == kind


def test_resolve_unknown_resource() -> None:
    with pytest.raises(UnknownKind, match='resource type "bogus"'):
        resolve_resource("bogus")


def test_public_surface_is_importable() -> None:
    for name in pylium.api.__all__:
        assert hasattr(pylium.api, name)
