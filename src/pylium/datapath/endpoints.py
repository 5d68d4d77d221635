"""What the control plane asks of the endpoint datapath, as protocols and plain rows.

The endpoint manager writes desired state (one `EndpointRow` per ready endpoint) through the
`EndpointDatapath` operations, with Cilium's reconciler meanings: `update` is idempotent,
`delete` of something already gone is success, `prune` diffs the whole desired set against the
kernel. `Datapath` adds the agent-facing lifecycle and the read-outs the REST API serves.

Nothing here touches the kernel (no libbpf), so the control plane and its unit tests import it
freely; `pylium.datapath.reconciler.BpfDatapath` is the real implementation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class EndpointRow:
    """The datapath's view of one endpoint: what goes into `pylium_lxc`/`pylium_lxc_if` and
    which device gets the programs.

    A row built for a roll-back may lack the address (`ipv4 == ""`) or the ifindex (0): `delete`
    then removes what it can name (the links, by device name) and `prune` the rest.
    """

    id: int
    """The endpoint id (the datapath's lxc_id, the source of its events)."""
    ipv4: str
    host_ifname: str
    host_ifindex: int
    mac: str
    """The pod-side MAC (destination of packets delivered to the pod)."""
    host_mac: str
    """The host-side veth MAC (the pod's gateway MAC, source of delivered packets)."""
    pod_namespace: str = ""
    pod_name: str = ""
    """The pod (empty for an attachment without one): its identity comes from the ipcache."""


@dataclass(frozen=True)
class MetricSample:
    """One counter of the per-CPU metrics map, summed over CPUs."""

    reason: int
    """0 forwarded, else a drop reason (Cilium's codes, e.g. 132 invalid source IP)."""
    reason_name: str
    direction: str
    """"ingress" (to the pod) or "egress" (from the pod)."""
    packets: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "reasonName": self.reason_name,
            "direction": self.direction,
            "packets": self.packets,
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class CtSample:
    """One conntrack entry, for debugging."""

    scope: str
    """"egress" (from-container's entries) or "ingress" (to-container's)."""
    proto: int
    src: str
    sport: int
    dst: str
    dport: int
    expires_in: int
    """Seconds until garbage collection may delete it (negative: already expired)."""
    tx_packets: int
    tx_bytes: int
    rx_packets: int
    rx_bytes: int
    flags: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "proto": self.proto,
            "src": self.src,
            "sport": self.sport,
            "dst": self.dst,
            "dport": self.dport,
            "expiresIn": self.expires_in,
            "txPackets": self.tx_packets,
            "txBytes": self.tx_bytes,
            "rxPackets": self.rx_packets,
            "rxBytes": self.rx_bytes,
            "flags": list(self.flags),
        }


class EndpointDatapath(Protocol):
    """The endpoint manager's side: desired rows in, kernel state out of sight."""

    async def update(self, row: EndpointRow) -> None:
        """Make the row true in the kernel (map entries, both programs attached); idempotent."""
        ...

    async def delete(self, row: EndpointRow) -> None:
        """Remove the row's links, pins and map entries; what is already gone is success."""
        ...

    async def prune(self, desired: Iterable[EndpointRow]) -> None:
        """Remove every map entry and link pin that no desired row accounts for."""
        ...

    async def verify(self, row: EndpointRow) -> list[str]:
        """Everything the row needs in the datapath that is missing, named (CNI CHECK)."""
        ...


class Datapath(EndpointDatapath, Protocol):
    """The agent's datapath component."""

    async def start(self, router_ip: str, pod_cidr: str) -> None:
        """Load the programs for this node, re-using pinned state; start periodic work."""
        ...

    async def stop(self) -> None:
        """End periodic work and close every fd; pinned maps and links stay (restart)."""
        ...

    def metrics(self) -> list[MetricSample]:
        """Every forwarded/dropped counter, by reason and direction."""
        ...

    def conntrack(self) -> list[CtSample]:
        """Every conntrack entry."""
        ...
