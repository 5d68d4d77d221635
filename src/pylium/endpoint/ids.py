"""Numeric endpoint IDs, 1..65535, as Cilium's (they key per-endpoint BPF state later).

The IDs in use are those of the endpoint state files, so they persist with them; next-fit
allocation reuses an ID only after it was released and the rest of the range was tried.
"""

from __future__ import annotations

MAX_ID = 65535


class IdsExhausted(Exception):
    """Every endpoint ID is in use."""


class EndpointIds:
    """Allocator of endpoint IDs."""

    def __init__(self) -> None:
        self._used: set[int] = set()
        self._cursor = 0

    def reserve(self, endpoint_id: int) -> None:
        """Mark an ID found on disk as used."""
        if not 1 <= endpoint_id <= MAX_ID:
            raise ValueError(f"endpoint id {endpoint_id} out of range 1..{MAX_ID}")
        self._used.add(endpoint_id)
        self._cursor = max(self._cursor, endpoint_id)

    def allocate(self) -> int:
        """The next free ID after the last one handed out."""
        for step in range(MAX_ID):
            candidate = (self._cursor + step) % MAX_ID + 1
            if candidate not in self._used:
                self._used.add(candidate)
                self._cursor = candidate
                return candidate
        raise IdsExhausted(f"all {MAX_ID} endpoint ids are in use")

    def release(self, endpoint_id: int) -> None:
        """Return an ID."""
        self._used.discard(endpoint_id)
