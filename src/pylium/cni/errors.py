"""CNI errors: each class carries the spec's error code, so callers raise by meaning.

The plugin prints every error as the spec's error JSON on stdout and exits 1. Codes 0-99 are
the spec's (plus libcni's 8 and 999); pylium defines none of its own::

    CniError (999 internal / unclassified, as the reference plugins)
    ├── IncompatibleVersion   1   cniVersion unsupported, or the command needs a newer config
    ├── UnknownContainer      3   the container (netns, endpoint) does not exist
    ├── InvalidEnvironment    4   missing or invalid CNI_* variables, unknown command, CNI_ARGS
    ├── IOFailure             5   reading stdin failed
    ├── DecodeFailure         6   stdin is not JSON, or the version string is malformed
    ├── InvalidConfig         7   the network configuration is invalid
    ├── InvalidNetns          8   CNI_NETNS is the plugin's own netns
    ├── TryAgainLater        11   transient: the agent is unreachable, the pool is exhausted
    ├── PluginUnavailable    50   STATUS: the plugin cannot service ADD requests now
    └── AgentFailure        any   an error answer of the agent, whose code is passed through
"""

from __future__ import annotations

from typing import Any


class CniError(Exception):
    """Base of every CNI error; `code` is what the runtime sees."""

    code = 999

    def __init__(self, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> dict[str, Any]:
        """The spec's error object (`details` only when there is something to say)."""
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


class IncompatibleVersion(CniError):
    """The requested cniVersion is not supported, or too old for the command."""

    code = 1


class UnknownContainer(CniError):
    """The container, its netns or its endpoint does not exist."""

    code = 3


class InvalidEnvironment(CniError):
    """Missing or invalid CNI_* environment variables (the message names them)."""

    code = 4


class IOFailure(CniError):
    """An I/O failure, such as reading the configuration from stdin."""

    code = 5


class DecodeFailure(CniError):
    """The configuration is not valid JSON, or a version string cannot be parsed."""

    code = 6


class InvalidConfig(CniError):
    """The network configuration is invalid."""

    code = 7


class InvalidNetns(CniError):
    """CNI_NETNS names the plugin's own network namespace."""

    code = 8


class TryAgainLater(CniError):
    """A transient condition: the runtime should retry later."""

    code = 11


class PluginUnavailable(CniError):
    """STATUS: the plugin cannot service ADD requests."""

    code = 50


class AgentFailure(CniError):
    """An error answered by the agent; its code (CNI-compatible by contract) is kept."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg, details)
        self.code = code
