"""Flows of several agents as one stream, in time order (what `pylium observe` shows for a lab).

History: every node's newest `last` matching flows are fetched and merged by time, and the
newest `last` of all are kept. Following: one thread per node streams its new flows into a
queue; each node's stream starts right after its history ended (from its newest flow on,
skipping what is not newer), so nothing falls between the two and nothing comes twice.
Followed flows come in the order they arrive. Stdlib only, over `AgentClient`, so the CLI
stays light.
"""

from __future__ import annotations

import http.client
import json
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from pylium.agent.client import AgentClient, AgentError
from pylium.hubble.flow import format_time, parse_time

Response = dict[str, Any]
"""One observer.GetFlowsResponse in JSON form (`flow` or `lost_events`, `node_name`, `time`)."""


@dataclass
class NodeSource:
    """One agent to read flows from."""

    node: str
    client: AgentClient
    since_ns: int | None = None
    """Follow from this time (set by `history`)."""


@dataclass(frozen=True)
class NodeFailure:
    """A node whose agent could not be read."""

    node: str
    error: str


def _time_of(resp: Response) -> int:
    return parse_time(resp["time"]) if "time" in resp else 0


def history(
    sources: Sequence[NodeSource],
    params: list[tuple[str, str]],
    last: int,
    first: bool = False,
    since_ns: int | None = None,
) -> tuple[list[Response], list[NodeFailure]]:
    """The newest `last` matching flows over every node (the oldest with `first`) at or after
    `since_ns`, oldest first, and the nodes that failed. Sets each source's follow start."""
    started = time.time_ns()
    merged: list[Response] = []
    failures: list[NodeFailure] = []
    extra = [("last", str(last))] + ([("first", "1")] if first else [])
    if since_ns is not None:
        extra.append(("since", format_time(since_ns)))
    query = urlencode([*params, *extra])
    for src in sources:
        try:
            body = b"".join(src.client.stream_lines(f"/v1/flows?{query}"))
        except AgentError as err:
            failures.append(NodeFailure(src.node, str(err)))
            continue
        flows: list[Response] = json.loads(body)
        merged.extend(flows)
        # Follow after the newest flow this node returned (or from now if it had none).
        src.since_ns = max((_time_of(r) for r in flows), default=started)
    merged.sort(key=_time_of)
    if not last:
        return [], failures
    return (merged[:last] if first else merged[max(0, len(merged) - last) :]), failures


def follow_flows(
    sources: Sequence[NodeSource], params: list[tuple[str, str]]
) -> Iterator[Response]:
    """New matching flows of every node as they come, until the caller stops or every stream
    ends. A node that fails yields a `{"node_failure": ...}` item, once."""
    items: queue.Queue[Response | None] = queue.Queue()
    threads = [
        threading.Thread(target=_pump, args=(src, params, items), daemon=True) for src in sources
    ]
    for thread in threads:
        thread.start()
    running = len(threads)
    while running:
        item = items.get()
        if item is None:
            running -= 1
        else:
            yield item


def _pump(
    src: NodeSource, params: list[tuple[str, str]], out: queue.Queue[Response | None]
) -> None:
    extra = [("follow", "1")]
    if src.since_ns is not None:
        extra.append(("since", format_time(src.since_ns)))
    try:
        for line in src.client.stream_lines("/v1/flows?" + urlencode([*params, *extra])):
            resp: Response = json.loads(line)
            # `since` is inclusive: what is not newer was shown or cut by `last` already.
            if src.since_ns is not None and "flow" in resp and _time_of(resp) <= src.since_ns:
                continue
            out.put(resp)
    except (AgentError, OSError, http.client.HTTPException, ValueError) as err:
        out.put({"node_failure": {"node": src.node, "error": str(err)}})
    finally:
        out.put(None)
