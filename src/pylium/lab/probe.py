"""One probe from the calling thread's network namespace: connect (TCP) or send (UDP), read
the answer. `pylium probe` enters the pod's namespace first; `pylium connectivity test` runs
`python -m pylium.lab.probe DEST PORT [--protocol udp] [--show-peer]` inside the pod (it prints
the JSON result). `--show-peer` sends the pod server's `whoami` request: the answer becomes
`NAME peer=IP`, IP being the client address the server saw (the client's own, or a SNAT
address)."""

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


def probe(
    dest: str,
    port: int,
    protocol: Protocol = "tcp",
    timeout: float = 2.0,
    show_peer: bool = False,
) -> ProbeResult:
    """Probe `dest:port`; never raises for network failures, it reports them. `show_peer`
    asks the pod server for the client address it saw (answer `NAME peer=IP`)."""
    start = time.monotonic()
    try:
        if protocol == "tcp":
            data = _tcp(dest, port, timeout, show_peer)
        else:
            data = _udp(dest, port, timeout, b"whoami\n" if show_peer else b"probe\n")
        # The TCP whoami answer comes as two lines: join them as UDP's one.
        answer = " ".join(data.decode(errors="replace").split())
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


def _tcp(dest: str, port: int, timeout: float, show_peer: bool) -> bytes:
    with socket.create_connection((dest, port), timeout=timeout) as sock:
        if show_peer:
            # The server answers whoami with a second line, then closes: read to the end.
            sock.sendall(b"whoami\n")
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
            if b"\n" in chunk and not show_peer:
                break
        return b"".join(chunks)


def _udp(dest: str, port: int, timeout: float, request: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        # connect() so an ICMP port-unreachable comes back as ECONNREFUSED.
        sock.connect((dest, port))
        sock.send(request)
        return sock.recv(65535)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: probe once, print the result as JSON, exit 0 if it answered."""
    parser = argparse.ArgumentParser(prog="pylium.lab.probe", description=__doc__)
    parser.add_argument("destination")
    parser.add_argument("port", type=int)
    parser.add_argument("--protocol", choices=["tcp", "udp"], default="tcp")
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--show-peer", action="store_true", help="ask for the client IP seen")
    args = parser.parse_args(argv)
    result = probe(args.destination, args.port, args.protocol, args.timeout, args.show_peer)
    print(json.dumps(result.to_json()))
    raise SystemExit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
