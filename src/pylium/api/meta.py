"""Object metadata and label selectors, shared by every kind."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from pylium.api.errors import FieldIssue
from pylium.api.fields import DNSLabel, DNSSubdomain, LabelKey, Labels, Model


class ObjectMeta(Model):
    """metadata of most kinds: the name is a DNS-1123 subdomain."""

    name: DNSSubdomain
    namespace: DNSLabel | None = None
    labels: Labels | None = None
    annotations: dict[str, str] | None = None


class LabelNameMeta(ObjectMeta):
    """metadata of kinds whose name must be a DNS-1123 label (Namespace, Service)."""

    name: DNSLabel


class LabelSelectorRequirement(Model):
    """One `matchExpressions` entry."""

    key: LabelKey
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise FieldIssue(
                "Required value: must be specified when `operator` is 'In' or 'NotIn'",
                ("values",),
            )
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise FieldIssue(
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                ("values",),
            )
        return self


class LabelSelector(Model):
    """A label query; an empty selector selects everything."""

    matchLabels: Labels | None = None
    matchExpressions: list[LabelSelectorRequirement] | None = None
