"""How pod traffic reaches other nodes (the same on every agent of a cluster)."""

from __future__ import annotations

from enum import StrEnum


class RoutingMode(StrEnum):
    """Cilium's `routing-mode`."""

    NATIVE = "native"
    """Plain routes: every other node's pod CIDR via that node's address (`NodeRoutes`)."""
    TUNNEL = "tunnel"
    """VXLAN between nodes; no per-node routes."""
