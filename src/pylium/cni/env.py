"""The CNI_* environment: which variables each command needs, and their validation.

Follows the spec and libcni's skel: an empty variable counts as absent (libcni always exports
all six, empty when unused), container IDs and interface names are checked the way skel checks
them, and CNI_ARGS must not carry unknown keys unless `IgnoreUnknown=1` is among them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from pylium.cni.errors import InvalidEnvironment, InvalidNetns

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")

# Variables each command needs besides CNI_COMMAND (spec section "Parameters").
REQUIRED: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
    "VERSION": (),
}

# CNI_ARGS keys pylium understands (libcni CommonArgs plus what runtimes send).
KNOWN_ARGS = frozenset(
    {
        "IgnoreUnknown",
        "K8S_POD_NAME",
        "K8S_POD_NAMESPACE",
        "K8S_POD_INFRA_CONTAINER_ID",
        "K8S_POD_UID",
        "IP",
        "MAC",
    }
)

_CONTAINER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_IFNAME_MAX = 15  # IFNAMSIZ - 1


class CniEnv(NamedTuple):
    """The validated invocation: command plus the variables that apply (empty when unset).
    (A NamedTuple, not a dataclass: `dataclasses` imports `inspect`, ~5 ms of every start.)"""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: Mapping[str, str] = MappingProxyType({})
    netns_override: bool = False


def parse_env(environ: Mapping[str, str]) -> CniEnv:
    """Validate `environ` for its CNI_COMMAND and return the invocation.

    Raises InvalidEnvironment (code 4) naming every missing or invalid variable.
    """
    command = environ.get("CNI_COMMAND", "")
    if not command:
        raise InvalidEnvironment("required env variables [CNI_COMMAND] missing")
    if command not in COMMANDS:
        raise InvalidEnvironment(
            f"unknown CNI_COMMAND: {command}", f"supported commands: {', '.join(COMMANDS)}"
        )
    if command == "VERSION":
        # libcni probes VERSION with dummy values in the other variables: ignore them.
        return CniEnv(command=command)
    missing = [name for name in REQUIRED[command] if not environ.get(name)]
    if missing:
        raise InvalidEnvironment(f"required env variables [{','.join(missing)}] missing")
    container_id = environ.get("CNI_CONTAINERID", "")
    ifname = environ.get("CNI_IFNAME", "")
    if command in ("ADD", "CHECK", "DEL"):
        validate_container_id(container_id)
        validate_ifname(ifname)
    override = environ.get("CNI_NETNS_OVERRIDE", "").lower() in ("1", "true")
    return CniEnv(
        command=command,
        container_id=container_id,
        netns=environ.get("CNI_NETNS", ""),
        ifname=ifname,
        args=parse_cni_args(environ.get("CNI_ARGS", "")),
        netns_override=override,
    )


def validate_container_id(container_id: str) -> None:
    """skel's rule: non-empty, starting alphanumeric, then alphanumerics and `_.-`."""
    if not _CONTAINER_ID_RE.match(container_id):
        raise InvalidEnvironment(
            "invalid characters in containerID", f"CNI_CONTAINERID={container_id!r}"
        )


def validate_ifname(ifname: str) -> None:
    """skel's rule for CNI_IFNAME: a usable Linux interface name."""
    problem = ""
    if not ifname:
        problem = "interface name is empty"
    elif len(ifname.encode()) > _IFNAME_MAX:
        problem = f"interface name is longer than {_IFNAME_MAX} characters"
    elif ifname in (".", ".."):
        problem = "interface name is . or .."
    elif any(c in ifname for c in "/:") or any(c.isspace() for c in ifname):
        problem = "interface name contains / or : or whitespace"
    if problem:
        raise InvalidEnvironment(f"invalid CNI_IFNAME: {problem}", f"CNI_IFNAME={ifname!r}")


def parse_cni_args(raw: str) -> dict[str, str]:
    """Parse `K=V;K2=V2`; unknown keys fail unless IgnoreUnknown is true (libcni LoadArgs)."""
    args: dict[str, str] = {}
    for pair in raw.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidEnvironment("invalid CNI_ARGS", f"not KEY=VALUE: {pair!r}")
        args[key] = value
    ignore_unknown = args.get("IgnoreUnknown", "").lower() in ("1", "true")
    unknown = sorted(set(args) - KNOWN_ARGS)
    if unknown and not ignore_unknown:
        raise InvalidEnvironment(
            f"unknown CNI_ARGS keys: {', '.join(unknown)}", "add IgnoreUnknown=1 to ignore them"
        )
    return args


def check_netns(env: CniEnv, own_netns: str = "/proc/self/ns/net") -> None:
    """Refuse a CNI_NETNS that is the plugin's own netns (skel's ErrInvalidNetNS, code 8).

    A netns path that does not exist is left to the command: ADD/CHECK fail on it (the
    container is gone), DEL does not need it.
    """
    if env.netns_override or not env.netns:
        return
    try:
        target = os.stat(env.netns)
    except OSError:
        return
    own = os.stat(own_netns)
    if (target.st_dev, target.st_ino) == (own.st_dev, own.st_ino):
        raise InvalidNetns(
            "plugin's netns and netns from CNI_NETNS should not be the same",
            f"CNI_NETNS={env.netns}; set CNI_NETNS_OVERRIDE=1 to allow it",
        )
