"""Dispatch one CNI invocation: validate env and stdin, run the command, render the answer.

Order follows libcni's skel: environment first, then the configuration, then the command.
Everything the runtime reads goes to stdout as JSON (or nothing); logs go to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from pylium.agent.client import AgentClient
from pylium.cni import commands
from pylium.cni.config import decode, parse_config, version_of
from pylium.cni.env import check_netns, parse_env
from pylium.cni.errors import CniError
from pylium.cni.versions import LATEST, SUPPORTED_VERSIONS

AgentFactory = Callable[[Path], AgentClient]


def run(
    environ: Mapping[str, str], stdin: bytes, agent_factory: AgentFactory = AgentClient
) -> tuple[int, str]:
    """Run one invocation; returns (exit code, stdout text)."""
    error_version = LATEST
    try:
        env = parse_env(environ)
        if env.command == "VERSION":
            return 0, _render(commands.cmd_version(stdin))
        obj = decode(stdin)
        requested = version_of(obj)
        if requested in SUPPORTED_VERSIONS:
            error_version = requested
        conf = parse_config(obj)
        agent = agent_factory(conf.agent_socket)
        if env.command == "STATUS":
            return 0, _render(commands.cmd_status(conf, agent))
        if env.command == "GC":
            return 0, _render(commands.cmd_gc(conf, agent))
        check_netns(env)
        command = {"ADD": commands.cmd_add, "DEL": commands.cmd_del, "CHECK": commands.cmd_check}
        return 0, _render(command[env.command](env, conf, agent))
    except CniError as exc:
        return 1, _render(exc.to_json(error_version))
    except Exception as exc:  # a bug: still answer the runtime in the CNI error format
        import traceback  # only on this path: it costs milliseconds at every start

        traceback.print_exc(file=sys.stderr)
        return 1, _render(CniError("internal error", repr(exc)).to_json(error_version))


def _render(output: dict[str, object] | None) -> str:
    return "" if output is None else json.dumps(output) + "\n"
