"""Labels of a pod as Cilium derives them, and the identity-relevant filter."""

from __future__ import annotations

import pytest

from pylium.identity import Label, LabelFilter, Labels, pod_labels


def _pod(labels: dict[str, str], namespace: str = "shop", **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "i"}], **spec},
    }


def test_label_parse_and_print_round_trip() -> None:
    """`source:key=value` parses into its parts, a bare key gets source k8s, and printing
    gives the text back."""
    assert Label.parse("k8s:app=web") == Label("k8s", "app", "web")
    assert Label.parse("app.kubernetes.io/name=db") == Label("k8s", "app.kubernetes.io/name", "db")
    assert Label.parse("reserved:host") == Label("reserved", "host", "")
    assert str(Label("k8s", "app", "web")) == "k8s:app=web"
    assert str(Label("reserved", "world")) == "reserved:world"
    with pytest.raises(ValueError):
        Labels.of(["k8s:app=a", "k8s:app=b"])


def test_canonical_form_is_sorted_and_order_free() -> None:
    """The canonical string sorts labels, so the same set always gives the same string."""
    a = Labels.of(["k8s:b=2", "k8s:a=1", "reserved:x"])
    b = Labels.of(["reserved:x", "k8s:a=1", "k8s:b=2"])
    assert a.canonical() == b.canonical() == "k8s:a=1;k8s:b=2;reserved:x;"
    assert a.to_map() == {"k8s:a": "1", "k8s:b": "2", "reserved:x": ""}
    assert Labels.from_map(a.to_map()) == a


def test_pod_labels_add_namespace_serviceaccount_and_cluster() -> None:
    """A pod's labels are its own plus namespace name, namespace labels, service account and
    cluster, all with source k8s."""
    ns = {"metadata": {"name": "shop", "labels": {"team": "blue"}}}
    labels = pod_labels(_pod({"app": "web"}, serviceAccountName="web-sa"), ns)
    assert sorted(map(str, labels)) == [
        "k8s:app=web",
        "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop",
        "k8s:io.cilium.k8s.namespace.labels.team=blue",
        "k8s:io.cilium.k8s.policy.cluster=default",
        "k8s:io.cilium.k8s.policy.serviceaccount=web-sa",
        "k8s:io.kubernetes.pod.namespace=shop",
    ]


def test_pod_labels_without_namespace_object_or_service_account() -> None:
    """With no Namespace in the store only its name is known; the service account defaults
    to `default` as admission fills it in."""
    labels = pod_labels(_pod({}, namespace="dev"), None, cluster="c1").to_map()
    assert labels["k8s:io.kubernetes.pod.namespace"] == "dev"
    assert labels["k8s:io.cilium.k8s.policy.serviceaccount"] == "default"
    assert labels["k8s:io.cilium.k8s.policy.cluster"] == "c1"
    assert labels["k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name"] == "dev"


@pytest.mark.parametrize(
    ("label", "relevant"),
    [
        ("k8s:app=web", True),
        ("k8s:io.kubernetes.pod.namespace=shop", True),
        ("k8s:io.cilium.k8s.namespace.labels.team=blue", True),
        ("k8s:io.cilium.k8s.policy.serviceaccount=sa", True),
        ("k8s:io.cilium.k8s.policy.cluster=default", True),
        ("k8s:app.kubernetes.io/name=web", True),
        ("reserved:host", True),
        ("k8s:pod-template-hash=5d8f9", False),
        ("k8s:controller-revision-hash=abc", False),
        ("k8s:pod-template-generation=3", False),
        ("k8s:statefulset.kubernetes.io/pod-name=web-0", False),
        ("k8s:apps.kubernetes.io/pod-index=0", False),
        ("k8s:batch.kubernetes.io/job-completion-index=1", False),
        ("k8s:batch.kubernetes.io/controller-uid=u", False),
        ("k8s:controller-uid=u", False),
        ("k8s:kubernetes.io/hostname=n1", False),
        ("k8s:io.kubernetes.container.name=c", False),
        ("k8s:failure-domain.beta.kubernetes.io/zone=z", False),
        ("k8s:topology.kubernetes.io/zone=z", False),
        ("k8s:k8s.io/thing=x", False),
        ("k8s:annotation.foo=x", False),
        ("k8s:etcd_node=e1", False),
    ],
)
def test_default_filter(label: str, relevant: bool) -> None:
    """Cilium's default rules drop hashes and per-pod Kubernetes labels, keep the rest."""
    assert LabelFilter().relevant(Label.parse(label)) is relevant


def test_user_include_rule_turns_the_filter_into_an_allow_list() -> None:
    """Once a user include rule exists only included labels count (the derived namespace
    labels still do, through the default includes)."""
    f = LabelFilter(["k8s:app$"])
    assert f.relevant(Label.parse("k8s:app=web"))
    assert not f.relevant(Label.parse("k8s:tier=front"))
    assert f.relevant(Label.parse("k8s:io.kubernetes.pod.namespace=shop"))
    assert not LabelFilter(["!k8s:tier"]).relevant(Label.parse("k8s:tier=front"))


def test_identity_labels_of_a_deployment_pod_ignore_its_hash() -> None:
    """Two replicas of different rollouts share identity labels."""
    f = LabelFilter()
    one = f.identity_labels(pod_labels(_pod({"app": "web", "pod-template-hash": "aaa"}), None))
    two = f.identity_labels(pod_labels(_pod({"app": "web", "pod-template-hash": "bbb"}), None))
    assert one == two
    assert Label("k8s", "app", "web") in one
