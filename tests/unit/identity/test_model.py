"""The CiliumIdentity kind: registry names, validation, and its `pylium get` columns."""

from __future__ import annotations

import pytest

from pylium.api import InvalidObject, resolve_resource, validate
from pylium.cli.printers import columns_for
from pylium.identity import Identity, Labels, identity_from_object, identity_object


def test_identities_resolve_by_every_name() -> None:
    """`pylium get identities` (and ciliumid, ciliumidentities) names the cluster-scoped kind."""
    for name in ("identities", "ciliumid", "ciliumidentities", "ciliumidentities.cilium.io"):
        info = resolve_resource(name)
        assert (info.kind, info.api_version, info.namespaced) == (
            "CiliumIdentity",
            "cilium.io/v2",
            False,
        )


def test_object_round_trip_and_validation() -> None:
    """An identity's object validates and reads back; a non-numeric name is refused."""
    identity = Identity(300, Labels.of(["k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop"]))
    obj = identity_object(identity)
    assert validate(obj) == obj
    assert identity_from_object(obj) == identity
    with pytest.raises(InvalidObject, match="numeric identity"):
        validate({**obj, "metadata": {"name": "web"}})
    with pytest.raises(InvalidObject, match="security-labels"):
        validate({k: v for k, v in obj.items() if k != "security-labels"})


def test_get_columns_show_id_and_labels() -> None:
    """`pylium get identities` prints ID, LABELS, AGE."""
    obj = identity_object(Identity(300, Labels.of(["k8s:b=2", "k8s:a=1"])))
    columns = columns_for("CiliumIdentity", wide=False)
    assert [c.header for c in columns] == ["ID", "LABELS", "AGE"]
    assert [c.cell(obj) for c in columns[:2]] == ["300", "k8s:a=1,k8s:b=2"]
