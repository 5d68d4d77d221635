"""Whether a node's agent answers its health check."""

from __future__ import annotations

from pathlib import Path

from pylium.agent.client import AgentClient, AgentError


def agent_health(socket: str | Path, timeout: float = 2.0) -> str:
    """ "ok" when the agent answers GET /v1/healthz with status ok, else why not."""
    try:
        answer = AgentClient(Path(socket), timeout=timeout).healthz()
    except AgentError as e:
        return str(e) or type(e).__name__
    return str(answer.get("status", "unknown"))
