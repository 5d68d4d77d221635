"""validate(obj): check a Kubernetes-shaped dict against its kind's model, name each bad field.

The store keeps the dict, not the model: unknown fields are preserved and no defaults are filled
in. Normalisation is limited to metadata.namespace: "default" for namespaced kinds when absent,
removed for cluster-scoped kinds (as the API server ignores it).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from pylium.api.errors import FieldError, FieldIssue, InvalidObject
from pylium.api.registry import kind_for

DEFAULT_NAMESPACE = "default"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# pydantic error types -> Kubernetes-style messages (others keep pydantic's own wording).
_TYPE_MESSAGES = {
    "missing": "Required value",
    "int_type": "must be an integer",
    "string_type": "must be a string",
    "bool_type": "must be a boolean",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
}


def validate(obj: Any) -> dict[str, Any]:
    """Validate an object and return a normalised copy.

    Raises:
        InvalidObject: naming each bad field, e.g. `Pod "web" is invalid:
            spec.containers[0].ports[0].containerPort: must be between 1 and 65535`.
        UnknownKind: apiVersion + kind is not registered.
    """
    if not isinstance(obj, dict):
        raise InvalidObject("Object", "", [FieldError("", "must be a mapping")])
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    shown_name = name if isinstance(name, str) else ""
    missing = [
        FieldError(f, "Required value")
        for f, v in (("apiVersion", api_version), ("kind", kind))
        if not isinstance(v, str) or not v
    ]
    if missing:
        raise InvalidObject(
            kind if isinstance(kind, str) and kind else "Object", shown_name, missing
        )
    assert isinstance(api_version, str) and isinstance(kind, str)
    info = kind_for(api_version, kind)

    out = copy.deepcopy(obj)
    if isinstance(out.get("metadata"), dict):
        if info.namespaced:
            out["metadata"]["namespace"] = out["metadata"].get("namespace") or DEFAULT_NAMESPACE
        else:
            out["metadata"].pop("namespace", None)
    try:
        info.model.model_validate(out)
    except ValidationError as exc:
        raise InvalidObject(kind, shown_name, _field_errors(exc.errors())) from None
    return out


def _field_errors(errors: list[ErrorDetails]) -> list[FieldError]:
    """One FieldError per problem. A value that fits no member of a union (a port number or
    name) fails once per member; the type mismatch of the other member is noise, so drop it."""
    converted = [(e["type"], _field_error(e)) for e in errors]
    paths = [fe.path for _, fe in converted]
    return [
        fe for type_, fe in converted if not (type_.endswith("_type") and paths.count(fe.path) > 1)
    ]


def _field_error(error: ErrorDetails) -> FieldError:
    loc: list[str | int] = list(error["loc"])
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, FieldIssue):
        return FieldError(format_path([*loc, *cause.subpath]), cause.message)
    # A failed union reports each member; the member name in the path helps nobody.
    loc = [p for p in loc if not (isinstance(p, str) and _is_type_tag(p))]
    type_ = error["type"]
    if type_ == "value_error" and cause is not None:
        message = str(cause)
    elif type_ == "literal_error":
        expected = str(ctx["expected"]).replace("'", '"').replace(" or ", ", ")
        message = f"Unsupported value: {json.dumps(error['input'])}: supported values: {expected}"
    elif type_ == "too_short" and ctx.get("min_length") == 1:
        message = "Required value"
    elif type_ == "too_short":
        message = f"must have at least {ctx.get('min_length')} items"
    else:
        message = _TYPE_MESSAGES.get(type_, error["msg"])
    return FieldError(format_path(loc), message)


def _is_type_tag(part: str) -> bool:
    """pydantic adds union members (`int`, `function-after[...]`) to error locations."""
    return part in ("int", "str") or part.startswith(("function-", "constrained-"))


def format_path(loc: Sequence[str | int]) -> str:
    """A field path as kubectl prints it: `spec.containers[0].ports[1].name`, with map keys
    that are not identifiers in brackets (`spec.ipam.pool[10.0.0.1]`)."""
    out = ""
    for i, part in enumerate(loc):
        is_key = i + 1 < len(loc) and loc[i + 1] == "[key]"
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            continue
        elif _IDENTIFIER.match(part) and not is_key:
            out += f".{part}" if out else part
        else:
            out += f"[{part}]"
    return out
