"""Endpoint state files: one `<id>.json` per endpoint, so a restarted agent knows its endpoints.

A file is written with state `creating` before any kernel change of an ADD, `ready` once the
ADD is complete and `deleting` before a DEL starts; a restart rolls back `creating` and finishes
`deleting`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pylium import statefile
from pylium.endpoint.model import Endpoint

log = logging.getLogger(__name__)


class EndpointStateDir:
    """The directory of endpoint state files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, endpoint_id: int) -> Path:
        """The state file of one endpoint."""
        return self.directory / f"{endpoint_id}.json"

    def save(self, endpoint: Endpoint) -> None:
        """Write (atomically, durably) one endpoint's state."""
        statefile.write_json(self.path(endpoint.id), endpoint.to_json())

    def remove(self, endpoint_id: int) -> None:
        """Forget one endpoint; absent already is success."""
        statefile.remove(self.path(endpoint_id))

    def load_all(self) -> list[Endpoint]:
        """Every endpoint on disk, by id. Removes temporary files left by a crash mid-write;
        an unreadable file is logged and skipped (kept for inspection)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for tmp in self.directory.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        found: list[Endpoint] = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                found.append(Endpoint.from_json(statefile.read_json(path)))
            except (ValueError, TypeError, KeyError) as err:
                log.error("skipping unreadable endpoint state %s: %s", path, err)
        return sorted(found, key=lambda e: e.id)

    def files(self) -> list[Path]:
        """Every state file (for leak checks)."""
        return sorted(self.directory.glob("*.json"))
