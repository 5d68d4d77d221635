"""The selector cache: selector -> the identities it selects, kept up to date incrementally.

Identities come and go as the identity allocator's cache changes (pods, pod labels and
namespace labels change which label sets exist) and as CIDR identities are allocated for CIDR
peers. Each change re-evaluates every registered selector against that ONE identity, never the
whole table; users of a selector learn which identities were added and removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pylium.identity.labels import Labels
from pylium.policy.selector import Selector


@dataclass(frozen=True)
class SelectionChange:
    """What changed in one selector's selection."""

    selector: Selector
    added: frozenset[int]
    removed: frozenset[int]


Listener = Callable[[list[SelectionChange]], None]


class SelectorCache:
    """Selections of registered selectors over the known identities.

    A selector stays registered while it has users (`add_user` / `remove_user` count them).
    """

    def __init__(self) -> None:
        self._identities: dict[int, Labels] = {}
        self._selections: dict[Selector, set[int]] = {}
        self._users: dict[Selector, int] = {}
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` with the selection changes of each identity update."""
        self._listeners.append(listener)

    def add_user(self, selector: Selector) -> frozenset[int]:
        """Register one user of a selector; returns its current selection."""
        self._users[selector] = self._users.get(selector, 0) + 1
        if selector not in self._selections:
            self._selections[selector] = {
                i for i, labels in self._identities.items() if selector.matches(labels)
            }
        return frozenset(self._selections[selector])

    def remove_user(self, selector: Selector) -> None:
        """Drop one user; the selector leaves the cache with its last user."""
        count = self._users.get(selector, 0) - 1
        if count > 0:
            self._users[selector] = count
            return
        self._users.pop(selector, None)
        self._selections.pop(selector, None)

    def selections(self, selectors: Iterable[Selector]) -> frozenset[int]:
        """The union of the selections of registered selectors."""
        out: set[int] = set()
        for selector in selectors:
            out |= self._selections[selector]
        return frozenset(out)

    def selectors(self) -> dict[Selector, frozenset[int]]:
        """Every registered selector and its selection (`policy selectors` style dump)."""
        return {s: frozenset(ids) for s, ids in self._selections.items()}

    def labels_of(self, identity: int) -> Labels | None:
        """The labels of a known identity."""
        return self._identities.get(identity)

    def upsert_identity(self, identity: int, labels: Labels) -> list[SelectionChange]:
        """An identity appeared (the labels of an id never change)."""
        if self._identities.get(identity) == labels:
            return []
        self._identities[identity] = labels
        return self._update(identity)

    def remove_identity(self, identity: int) -> list[SelectionChange]:
        """An identity is gone."""
        if self._identities.pop(identity, None) is None:
            return []
        return self._update(identity)

    def _update(self, identity: int) -> list[SelectionChange]:
        known = self._identities.get(identity)
        changes: list[SelectionChange] = []
        for selector, selected in self._selections.items():
            now = known is not None and selector.matches(known)
            if now and identity not in selected:
                selected.add(identity)
                changes.append(SelectionChange(selector, frozenset([identity]), frozenset()))
            elif not now and identity in selected:
                selected.discard(identity)
                changes.append(SelectionChange(selector, frozenset(), frozenset([identity])))
        if changes:
            for listener in self._listeners:
                listener(changes)
        return changes
