"""Whether a node's agent answers its health check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pylium.agent.client import AgentClient, AgentError


def agent_health(socket: str | Path, timeout: float = 2.0) -> str:
    """ "ok" when the agent answers GET /v1/healthz with status ok, else why not."""
    try:
        answer = AgentClient(Path(socket), timeout=timeout).healthz()
    except AgentError as e:
        return str(e) or type(e).__name__
    return str(answer.get("status", "unknown"))


def flow_status(socket: str | Path, timeout: float = 2.0) -> dict[str, Any] | None:
    """The agent's flow observer status (seen flows, lost events by source), None when it does
    not answer: `lab status` shows losses so they are never silent."""
    try:
        return AgentClient(Path(socket), timeout=timeout).flow_status()
    except AgentError:
        return None
