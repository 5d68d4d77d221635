"""One probe from the calling thread's network namespace: connect (TCP) or send (UDP), read
the answer. `pylium probe` enters the pod's namespace first; `pylium connectivity test` runs
`python -m pylium.lab.probe DEST PORT [--protocol udp]` inside the pod (it prints the JSON
result)."""

from __future__ import annotations

import argparse
import errno
import json
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

Protocol = Literal["tcp", "udp"]

_REASONS = {
    errno.ECONNREFUSED: "refused",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ECONNRESET: "reset",
}


@dataclass(frozen=True)
class ProbeResult:
    """What a probe saw. `ok` means connected and answered."""

    destination: str
    port: int
    protocol: Protocol
    ok: bool
    answer: str | None
    reason: str | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """The stable `-o json` form."""
        return asdict(self)


def probe(dest: str, port: int, protocol: Protocol = "tcp", timeout: float = 2.0) -> ProbeResult:
    """Probe `dest:port`; never raises for network failures, it reports them."""
    start = time.monotonic()
    try:
        data = _tcp(dest, port, timeout) if protocol == "tcp" else _udp(dest, port, timeout)
        answer = data.decode(errors="replace").strip()
        reason = None if answer else "no answer"
    except TimeoutError:
        answer, reason = None, "timeout" if protocol == "tcp" else "no answer"
    except OSError as e:
        answer, reason = None, _REASONS.get(e.errno or 0, e.strerror or str(e))
    return ProbeResult(
        destination=dest,
        port=port,
        protocol=protocol,
        ok=reason is None,
        answer=answer,
        reason=reason,
        seconds=round(time.monotonic() - start, 4),
    )


def _tcp(dest: str, port: int, timeout: float) -> bytes:
    with socket.create_connection((dest, port), timeout=timeout) as sock:
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
            if b"\n" in chunk:
                break
        return b"".join(chunks)


def _udp(dest: str, port: int, timeout: float) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        # connect() so an ICMP port-unreachable comes back as ECONNREFUSED.
        sock.connect((dest, port))
        sock.send(b"probe\n")
        return sock.recv(65535)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: probe once, print the result as JSON, exit 0 if it answered."""
    parser = argparse.ArgumentParser(prog="pylium.lab.probe", description=__doc__)
    parser.add_argument("destination")
    parser.add_argument("port", type=int)
    parser.add_argument("--protocol", choices=["tcp", "udp"], default="tcp")
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    result = probe(args.destination, args.port, args.protocol, args.timeout)
    print(json.dumps(result.to_json()))
    raise SystemExit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
