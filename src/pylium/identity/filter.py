"""Which labels are identity-relevant: Cilium's label prefix filter (pkg/labelsfilter).

A rule is `[source:]regex`, `!` before the regex ignores instead of includes. The regex must
match at the start of the label key. A label is identity-relevant when no include rule was
added by the user (the default list has includes only to override its own ignores) and no
ignore rule matches, or when the longest matching include is longer than the shortest matching
ignore: `io.kubernetes.pod.namespace` beats `!io.kubernetes`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from pylium.identity.labels import Label, Labels

DEFAULT_RULES: tuple[str, ...] = (
    "reserved:.*",
    r"io\.kubernetes\.pod\.namespace",
    r"io\.cilium\.k8s\.namespace\.labels",
    r"app\.kubernetes\.io",
    r"io\.cilium\.k8s\.policy\.cluster",
    r"io\.cilium\.k8s\.policy\.serviceaccount",
    r"!io\.kubernetes",
    r"!kubernetes\.io",
    r"!statefulset\.kubernetes\.io/pod-name",
    r"!apps\.kubernetes\.io/pod-index",
    r"!batch\.kubernetes\.io/job-completion-index",
    r"!batch\.kubernetes\.io/controller-uid",
    r"!.*beta\.kubernetes\.io",
    r"!k8s\.io",
    "!pod-template-generation",
    "!pod-template-hash",
    "!controller-revision-hash",
    "!controller-uid",
    "!annotation.*",
    "!etcd_node",
    r"!topology\.kubernetes\.io",
)
"""Cilium's default identity-relevant label rules, in its order."""


@dataclass(frozen=True)
class Rule:
    """One parsed rule."""

    source: str
    """Only labels of this source ("" = any)."""
    pattern: re.Pattern[str]
    ignore: bool

    @classmethod
    def parse(cls, text: str) -> Rule:
        """Parse `[source:][!]regex`."""
        source, sep, prefix = text.partition(":")
        if not sep:
            source, prefix = "", text
        ignore = prefix.startswith("!")
        if ignore:
            prefix = prefix[1:]
        if not prefix:
            raise ValueError(f"label rule {text!r} has an empty prefix")
        return cls(source, re.compile(prefix), ignore)

    def match_length(self, label: Label) -> int:
        """How much of the label's key the rule matches from its start (0 = no match)."""
        if self.source and self.source != label.source:
            return 0
        m = self.pattern.match(label.key)
        return m.end() if m else 0


class LabelFilter:
    """Split labels into identity-relevant ones and the rest.

    Args:
        extra: user rules added after the defaults; any include among them makes the filter
            an allow-list (only included labels count), as Cilium's `--labels`.
    """

    def __init__(self, extra: Iterable[str] = ()) -> None:
        user = [Rule.parse(r) for r in extra]
        self.rules = tuple(Rule.parse(r) for r in DEFAULT_RULES) + tuple(user)
        self.allow_list = any(not r.ignore for r in user)

    def relevant(self, label: Label) -> bool:
        """Whether one label is identity-relevant."""
        included = ignored = 0
        for rule in self.rules:
            length = rule.match_length(label)
            if not length:
                continue
            if rule.ignore:
                ignored = length if not ignored else min(ignored, length)
            else:
                included = max(included, length)
        return (not self.allow_list and not ignored) or included > ignored

    def identity_labels(self, labels: Labels) -> Labels:
        """The identity-relevant subset."""
        return Labels(label for label in labels if self.relevant(label))
