"""Kubernetes-shaped object models (pydantic v2), used to validate what enters the store.

`validate(obj)` checks a dict against its kind's model and returns a normalised copy; the kind
registry maps apiVersion + kind to a model and the names `pylium get` accepts.
"""

from __future__ import annotations

from pylium.api.errors import ApiError, FieldError, InvalidObject, UnknownKind
from pylium.api.registry import KINDS, KindInfo, kind_for, kind_named, resolve_resource
from pylium.api.validation import DEFAULT_NAMESPACE, format_path, validate

__all__ = [
    "DEFAULT_NAMESPACE",
    "KINDS",
    "ApiError",
    "FieldError",
    "InvalidObject",
    "KindInfo",
    "UnknownKind",
    "format_path",
    "kind_for",
    "kind_named",
    "resolve_resource",
    "validate",
]
