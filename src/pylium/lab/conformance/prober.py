"""A long-lived prober for one lab node: many probes from many of its pods at once.

`python -m pylium.lab.conformance.prober --cgroup DIR` moves itself into the node's cgroup
(so the node's socket LB translates ClusterIPs, as for the pod's own processes), then reads
JSON requests `{"id", "netns", "dest", "port", "protocol", "timeout"}` one a line on stdin and
answers `{"id", "ok", "reason"}` one a line on stdout, in completion order. Each pod namespace
gets a pool of threads that entered it once (setns acts per thread); every probe runs at once,
so a batch costs about one timeout however many silent drops it holds.

`Prober` is the caller's side: start one per node, `send()` a batch to each, `collect()` them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pylium.lab import cgroup, netns
from pylium.lab.probe import probe

WORKERS = 32
"""Threads per pod namespace: one probe each, so this many in flight per source pod."""


@dataclass(frozen=True)
class Request:
    """One probe from the pod whose namespace is `netns`."""

    id: int
    netns: str
    dest: str
    port: int
    protocol: str
    timeout: float


class Prober:
    """The caller's handle on one node's prober process."""

    def __init__(self, cgroup_dir: Path) -> None:
        argv = [sys.executable, "-m", "pylium.lab.conformance.prober", "--cgroup", str(cgroup_dir)]
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self._pending = 0

    def send(self, batch: list[Request]) -> None:
        """Hand a batch over; the probes start at once."""
        assert self._proc.stdin is not None
        self._proc.stdin.write("".join(json.dumps(asdict(r)) + "\n" for r in batch))
        self._proc.stdin.flush()
        self._pending += len(batch)

    def collect(self) -> dict[int, tuple[bool, str | None]]:
        """The answers of everything sent: id -> (answered, why not)."""
        assert self._proc.stdout is not None
        out = {}
        while self._pending:
            line = self._proc.stdout.readline()
            if not line:
                raise RuntimeError(f"prober exited with {self._proc.wait()}")
            answer = json.loads(line)
            out[answer["id"]] = (answer["ok"], answer["reason"])
            self._pending -= 1
        return out

    def close(self) -> None:
        """Stop the process (end of input makes it exit)."""
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _serve(lines: Any, write: Any) -> None:
    pools: dict[str, ThreadPoolExecutor] = {}
    lock = threading.Lock()

    def run(req: Request) -> None:
        result = probe(req.dest, req.port, "tcp" if req.protocol == "TCP" else "udp", req.timeout)
        with lock:
            write(json.dumps({"id": req.id, "ok": result.ok, "reason": result.reason}) + "\n")

    for line in lines:
        req = Request(**json.loads(line))
        if req.netns not in pools:
            path = netns.netns_path(req.netns)
            pools[req.netns] = ThreadPoolExecutor(
                WORKERS, initializer=netns.enter, initargs=(path,)
            )
        pools[req.netns].submit(run, req)
    for pool in pools.values():
        pool.shutdown()


def main() -> None:
    """Entry point of the prober process."""
    parser = argparse.ArgumentParser(prog="pylium.lab.conformance.prober", description=__doc__)
    parser.add_argument("--cgroup", type=Path, required=True, help="the node's cgroup directory")
    args = parser.parse_args()
    cgroup.add_pid(args.cgroup, os.getpid())

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    _serve(sys.stdin, write)


if __name__ == "__main__":
    main()
