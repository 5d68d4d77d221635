"""Security labels as Cilium writes them: `source:key=value`, and the labels of a pod.

A pod's labels come from its own metadata.labels plus what Cilium derives (all with source
`k8s`): `io.kubernetes.pod.namespace=<ns>`, each namespace label as
`io.cilium.k8s.namespace.labels.<key>`, `io.cilium.k8s.policy.serviceaccount` and
`io.cilium.k8s.policy.cluster`. Reserved identities carry one `reserved:<name>` label; CIDR
identities (a later issue) carry `cidr:` labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SOURCE_K8S = "k8s"
SOURCE_RESERVED = "reserved"
SOURCE_CIDR = "cidr"
SOURCE_FQDN = "fqdn"

POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
SERVICE_ACCOUNT_LABEL = "io.cilium.k8s.policy.serviceaccount"
CLUSTER_LABEL = "io.cilium.k8s.policy.cluster"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""The API server sets it on every Namespace; pylium's store does not, so it is added here."""

DEFAULT_CLUSTER = "default"
"""Cilium's default cluster name."""
DEFAULT_SERVICE_ACCOUNT = "default"
"""What admission fills in when a pod names no service account."""


@dataclass(frozen=True, order=True)
class Label:
    """One label: `k8s:app=web` is Label("k8s", "app", "web")."""

    source: str
    key: str
    value: str = ""

    @property
    def source_key(self) -> str:
        """`source:key`, the form CiliumIdentity's `security-labels` map uses as its key."""
        return f"{self.source}:{self.key}"

    def __str__(self) -> str:
        return f"{self.source_key}={self.value}" if self.value else self.source_key

    @classmethod
    def parse(cls, text: str) -> Label:
        """Parse `source:key=value` (`source:` defaults to `k8s`, `=value` to "")."""
        source_key, _, value = text.partition("=")
        source, sep, key = source_key.partition(":")
        if not sep:
            source, key = SOURCE_K8S, source
        if not key:
            raise ValueError(f"label {text!r} has no key")
        return cls(source, key, value)


class Labels(frozenset[Label]):
    """A set of labels, hashable, one value per `source:key`."""

    @classmethod
    def of(cls, labels: Iterable[Label | str]) -> Labels:
        """Labels from Label objects or `source:key=value` strings."""
        out = [label if isinstance(label, Label) else Label.parse(label) for label in labels]
        keys = [label.source_key for label in out]
        if len(set(keys)) != len(keys):
            raise ValueError(f"labels {sorted(map(str, out))} repeat a key")
        return cls(out)

    @classmethod
    def from_map(cls, security_labels: Mapping[str, str]) -> Labels:
        """Labels from a CiliumIdentity's `security-labels` (`source:key` -> value)."""
        return cls.of(
            Label.parse(f"{k}={v}") if v else Label.parse(k) for k, v in security_labels.items()
        )

    def to_map(self) -> dict[str, str]:
        """`source:key` -> value, sorted by key (CiliumIdentity's `security-labels`)."""
        return {label.source_key: label.value for label in sorted(self)}

    def canonical(self) -> str:
        """One string per label set, as Cilium's sorted list form: `k8s:a=1;k8s:b=2;`."""
        return "".join(f"{label};" for label in sorted(self))

    def has_source(self, *sources: str) -> bool:
        """Whether any label has one of these sources."""
        return any(label.source in sources for label in self)

    def __str__(self) -> str:
        return ",".join(str(label) for label in sorted(self))


def k8s_labels(labels: Mapping[str, str] | None) -> list[Label]:
    """Kubernetes metadata.labels as `k8s:` labels."""
    return [Label(SOURCE_K8S, k, v) for k, v in (labels or {}).items()]


def pod_labels(
    pod: Mapping[str, Any], namespace: Mapping[str, Any] | None, cluster: str = DEFAULT_CLUSTER
) -> Labels:
    """Every label Cilium derives for a pod (before the identity filter).

    Args:
        pod: the Pod object.
        namespace: its Namespace object, or None when the store has none (then only the
            namespace's name is known).
        cluster: the cluster name (`io.cilium.k8s.policy.cluster`).
    """
    meta = pod["metadata"]
    ns_name = str(meta.get("namespace") or "default")
    ns_labels = dict(((namespace or {}).get("metadata") or {}).get("labels") or {})
    ns_labels.setdefault(NAMESPACE_NAME_LABEL, ns_name)
    spec = pod.get("spec") or {}
    account = spec.get("serviceAccountName") or spec.get("serviceAccount")
    out = k8s_labels(meta.get("labels"))
    out += [Label(SOURCE_K8S, NAMESPACE_LABELS_PREFIX + k, v) for k, v in ns_labels.items()]
    out += [
        Label(SOURCE_K8S, POD_NAMESPACE_LABEL, ns_name),
        Label(SOURCE_K8S, SERVICE_ACCOUNT_LABEL, str(account or DEFAULT_SERVICE_ACCOUNT)),
        Label(SOURCE_K8S, CLUSTER_LABEL, cluster),
    ]
    # Derived labels win over a pod label of the same key, as Cilium overwrites them.
    merged = {label.source_key: label for label in out}
    return Labels(merged.values())
