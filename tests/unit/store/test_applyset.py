"""The three-way merge of `apply`: set what the manifest has, drop what it no longer has, keep
what others wrote."""

from __future__ import annotations

import json

from pylium.store.applyset import LAST_APPLIED, merge_applied, with_last_applied


def test_last_applied_records_the_manifest_without_server_fields() -> None:
    manifest = {
        "kind": "Pod",
        "metadata": {"name": "a", "resourceVersion": "7", "annotations": {"x": "1"}},
        "spec": {"n": 1},
    }
    out = with_last_applied(manifest)
    assert "resourceVersion" not in out["metadata"]
    assert json.loads(out["metadata"]["annotations"][LAST_APPLIED]) == {
        "kind": "Pod",
        "metadata": {"name": "a", "annotations": {"x": "1"}},
        "spec": {"n": 1},
    }
    assert out["metadata"]["annotations"]["x"] == "1"


def test_merge_removes_dropped_fields_and_keeps_foreign_ones() -> None:
    first = {"kind": "Pod", "metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}, "spec": {}}
    live = with_last_applied(first)
    live["metadata"]["uid"] = "u"
    live["metadata"]["labels"]["controller"] = "z"  # written by someone else
    live["spec"]["nodeName"] = "n1"
    live["status"] = {"phase": "Running"}
    second = {
        "kind": "Pod",
        "metadata": {"name": "a", "labels": {"x": "3"}},
        "spec": {"containers": [{"name": "c"}]},
    }
    merged = merge_applied(live, second)
    assert merged["metadata"]["labels"] == {"x": "3", "controller": "z"}
    assert merged["metadata"]["uid"] == "u"
    assert merged["spec"] == {"nodeName": "n1", "containers": [{"name": "c"}]}
    assert merged["status"] == {"phase": "Running"}
    assert json.loads(merged["metadata"]["annotations"][LAST_APPLIED])["metadata"]["labels"] == {
        "x": "3"
    }


def test_merge_replaces_lists_whole_and_is_stable() -> None:
    first = {"kind": "S", "metadata": {"name": "a"}, "spec": {"ports": [{"port": 1}, {"port": 2}]}}
    live = with_last_applied(first)
    second = {"kind": "S", "metadata": {"name": "a"}, "spec": {"ports": [{"port": 3}]}}
    merged = merge_applied(live, second)
    assert merged["spec"]["ports"] == [{"port": 3}]
    assert merge_applied(merged, second) == merged
