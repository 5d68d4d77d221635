"""The shared NetworkPolicy truth-table file (`shared/conformance/netpol/cases.yaml`): loading
it and filling its pod-IP placeholders. The lab harness and the model-level unit runner both
read the file through here."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml

CASES_FILE = Path(__file__).resolve().parents[4].parent / "shared/conformance/netpol/cases.yaml"
"""Where the shared file sits beside a checkout (/work/shared beside /work/main)."""
NAME_LABEL = "kubernetes.io/metadata.name"
"""The namespace label the API server sets; always present, whatever a case's labels say."""


def load_cases(path: Path = CASES_FILE) -> dict[str, Any] | None:
    """The case file, or None when it does not exist."""
    if not path.exists():
        return None
    with path.open() as f:
        # libyaml's loader: the pure-Python one takes seconds over this file.
        data: dict[str, Any] = yaml.load(f, Loader=yaml.CSafeLoader)
    return data


def substitute(value: Any, ips: dict[str, str]) -> Any:
    """`value` with `{{hostCIDR:NS/POD}}` / `{{wideCIDR:NS/POD}}` replaced from `ips`
    (pod key -> IP): the pod's /32, or the canonical /4 network holding it."""
    if isinstance(value, dict):
        return {k: substitute(v, ips) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, ips) for v in value]
    if isinstance(value, str) and value.startswith("{{") and value.endswith("}}"):
        kind, _, pod = value[2:-2].partition(":")
        ip = ips[pod]
        if kind == "hostCIDR":
            return f"{ip}/32"
        return str(ipaddress.ip_network(f"{ip}/4", strict=False))
    return value
