"""kubectl apply's three-way merge, shared by every backend's `Store.apply`.

The applied manifest is remembered in the annotation kubectl uses. A later apply sets every
field the new manifest has, removes the fields the previous manifest had and the new one
lacks, and keeps everything else: fields written by controllers (a pod's `spec.nodeName` set at
binding, its `status`, server metadata) survive a re-apply. Maps merge key by key; lists and
scalars are replaced whole (JSON merge-patch semantics, as kubectl uses for custom resources).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Literal

from pylium.store.interface import Object
from pylium.store.objectmeta import stamp_new

ApplyResult = Literal["created", "configured", "unchanged"]

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
"""Annotation holding the manifest of the last apply (compact JSON)."""

SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp")
"""metadata the store owns; never taken from a manifest."""


def with_last_applied(manifest: Object) -> Object:
    """The manifest as it will be stored: server fields dropped, itself recorded in the
    LAST_APPLIED annotation."""
    out = copy.deepcopy(manifest)
    meta = out["metadata"]
    for field in SERVER_FIELDS:
        meta.pop(field, None)
    annotations = dict(meta.get("annotations") or {})
    annotations.pop(LAST_APPLIED, None)
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    recorded = json.dumps(out, separators=(",", ":"), sort_keys=True)
    meta["annotations"] = {**annotations, LAST_APPLIED: recorded}
    return out


def apply_to(live: Object | None, manifest: Object) -> tuple[Object, ApplyResult]:
    """What `Store.apply(manifest)` writes over `live` (None: absent), and the result to report.

    For "unchanged" the object returned is `live` and nothing is to be written; otherwise the
    backend writes the object returned (stamping its resourceVersion).
    """
    if live is None:
        return stamp_new(with_last_applied(manifest)), "created"
    merged = merge_applied(live, manifest)
    if merged == live:
        return live, "unchanged"
    return merged, "configured"


def merge_applied(live: Object, manifest: Object) -> Object:
    """The object after applying `manifest` over `live` (see the module docstring)."""
    new = with_last_applied(manifest)
    last_text = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    try:
        last = json.loads(last_text) if last_text else {}
    except ValueError:
        last = {}
    merged: Object = _merge(live, last if isinstance(last, dict) else {}, new)
    return merged


def _merge(live: dict[str, Any], last: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(live)
    for key, value in new.items():
        current, previous = live.get(key), last.get(key)
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(current, dict):
            out[key] = _merge(current, previous if isinstance(previous, dict) else {}, value)
        else:
            out[key] = copy.deepcopy(value)
    for key in last:
        if key not in new:
            out.pop(key, None)
    return out
