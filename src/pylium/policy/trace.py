"""Trace a connection through the computed policies: egress of the source, ingress of the
destination, both must pass (replies are allowed by connection tracking, so only the first
packet's direction is traced).

The trace decides on pod addresses after service translation: a probe through a ClusterIP is
traced as a connection to the backend pod and its target port (the datapath's business).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pylium.identity.numeric import identity_name
from pylium.policy.compute import Decision
from pylium.policy.repository import Endpoint, Repository
from pylium.policy.rules import Direction


@dataclass(frozen=True)
class Trace:
    """The verdict of one connection attempt and why."""

    source: str
    destination: str
    protocol: str
    port: int
    source_identity: int
    destination_identity: int
    egress: Decision
    ingress: Decision

    @property
    def verdict(self) -> str:
        """`denied` if either direction drops, `audit` if either only audits, else `allowed`."""
        verdicts = {self.egress.verdict, self.ingress.verdict}
        return next(v for v in ("denied", "audit", "allowed") if v in verdicts)

    @property
    def allowed(self) -> bool:
        """Whether the connection goes through (AUDIT passes)."""
        return self.verdict != "denied"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (`pylium policy trace -o json`)."""
        return {
            "source": {"endpoint": self.source, "identity": self.source_identity},
            "destination": {"endpoint": self.destination, "identity": self.destination_identity},
            "protocol": self.protocol,
            "port": self.port,
            "verdict": self.verdict,
            "egress": _decision_dict(self.egress),
            "ingress": _decision_dict(self.ingress),
        }

    def lines(self) -> list[str]:
        """Human-readable explanation, one line per step."""
        out = [
            f"{self.source} (identity {identity_name(self.source_identity)}) -> "
            f"{self.destination} (identity {identity_name(self.destination_identity)}) "
            f"{self.port}/{self.protocol}"
        ]
        for direction, decision, who in (
            ("egress", self.egress, self.source),
            ("ingress", self.ingress, self.destination),
        ):
            out.append(f"  {direction} of {who}: {decision.verdict.upper()} ({decision.reason})")
            out += [f"    by {rule}" for rule in decision.rules]
        out.append(f"Final verdict: {self.verdict.upper()}")
        return out


def _decision_dict(decision: Decision) -> dict[str, Any]:
    return {
        "verdict": decision.verdict,
        "reason": decision.reason,
        "rules": list(decision.rules),
        "dropReason": decision.drop_reason,
    }


def trace(repo: Repository, source: str, destination: str, port: int, protocol: str) -> Trace:
    """Trace `source` -> `destination` (endpoint keys `namespace/name`) on port/protocol.

    Raises:
        KeyError: an endpoint is unknown.
    """
    endpoints = repo.endpoints()
    src, dst = endpoints[source], endpoints[destination]
    egress = repo.policy(source).decide(
        Direction.EGRESS, dst.identity, protocol, port, _cidr_class(repo, dst)
    )
    ingress = repo.policy(destination).decide(
        Direction.INGRESS, src.identity, protocol, port, _cidr_class(repo, src)
    )
    return Trace(source, destination, protocol, port, src.identity, dst.identity, egress, ingress)


def _cidr_class(repo: Repository, peer: Endpoint) -> int:
    """The CIDR class of the peer's (first) address, as the datapath looks it up."""
    return repo.cidr_class(min(peer.ips, key=str), peer.identity) if peer.ips else 0
