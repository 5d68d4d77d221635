"""Hubble UI: a live service map and flow table served over HTTP by the lab's relay.

The relay writes the address it serves the UI on into the lab dir (`lab status` shows it).
"""

from __future__ import annotations

from pathlib import Path

from pylium import paths


def ui_url_file(lab: str) -> Path:
    """Where a lab's relay writes its UI address once it listens."""
    return paths.lab_dir(lab) / "ui.url"


def write_ui_url(lab: str, url: str) -> None:
    """Record the UI address (atomically: `lab status` may read it meanwhile)."""
    target = ui_url_file(lab)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(url + "\n")
    tmp.replace(target)


def read_ui_url(lab: str) -> str | None:
    """The lab's UI address, None before the relay listens."""
    try:
        return ui_url_file(lab).read_text().strip() or None
    except FileNotFoundError:
        return None
