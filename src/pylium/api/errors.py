"""Errors of object validation.

Exceptions::

    ApiError (ValueError)
    ├── InvalidObject     the object breaks its kind's schema; `errors` names each field
    └── UnknownKind       no registered kind has that apiVersion + kind, or no resource that name
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem at one field, e.g. path `spec.containers[0].image`, message `Required value`."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ApiError(ValueError):
    """Base of the validation errors."""


class InvalidObject(ApiError):
    """An object failed validation; the message reads like kubectl's.

    Example: `Pod "web" is invalid: spec.containers[0].ports[0].containerPort: must be between
    1 and 65535`.
    """

    def __init__(self, kind: str, name: str, errors: Sequence[FieldError]) -> None:
        self.kind = kind
        self.name = name
        self.errors = list(errors)
        details = "; ".join(str(e) for e in self.errors)
        super().__init__(f'{kind} "{name}" is invalid: {details}')


class UnknownKind(ApiError):
    """No registered kind matches (an apply of an unknown kind, or `get` of an unknown type)."""


class FieldIssue(ValueError):
    """Raised by validators to report a problem below the field being validated.

    `subpath` (field names and list indexes) is appended to the validated field's path, so a
    cross-field check on `spec.containers` can point at `spec.containers[1].name`.
    """

    def __init__(self, message: str, subpath: Sequence[str | int] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.subpath = tuple(subpath)
