"""Which store a command acts on: `--store URL`, else env PYLIUM_STORE, else the lab record."""

from __future__ import annotations

import json
from pathlib import Path

from pylium import paths

LAB_RECORD = "lab.json"
"""The lab record in paths.lab_dir(lab); its "store" key holds the store URL."""


class NoStore(Exception):
    """No store URL was given and no lab record names one."""


def lab_record_path(lab: str) -> Path:
    """Where `pylium lab up` writes the lab record."""
    return paths.lab_dir(lab) / LAB_RECORD


def resolve_store_url(explicit: str | None, lab: str) -> str:
    """The store URL: `explicit` (the --store option or PYLIUM_STORE) or the lab record's.

    Raises:
        NoStore: with a message that says how to get one.
    """
    if explicit:
        return explicit
    record = lab_record_path(lab)
    try:
        url = json.loads(record.read_text()).get("store")
    except FileNotFoundError:
        raise NoStore(
            f'no lab "{lab}" is running ({record} not found): run `pylium lab up` first,'
            " or pass --store URL"
        ) from None
    except (OSError, ValueError, AttributeError) as exc:
        raise NoStore(f"cannot read the lab record {record}: {exc}") from None
    if not isinstance(url, str) or not url:
        raise NoStore(f'the lab record {record} has no "store" URL')
    return url
