"""cilium.io/v2 kinds pylium keeps in its store: CiliumNode (a node's IPAM state)."""

from __future__ import annotations

from pylium.api.core import Resource
from pylium.api.fields import CIDR, IPAddress, Model


class AllocationIP(Model):
    """Who holds an address (an endpoint or a pod) in the node's pool."""

    owner: str | None = None
    resource: str | None = None


class IPAMSpec(Model):
    """The node's pod CIDRs (written by `lab up` or the operator) and its address pool."""

    podCIDRs: list[CIDR] | None = None
    pool: dict[IPAddress, AllocationIP] | None = None


class NodeAddress(Model):
    """One of the node's own addresses."""

    type: str
    ip: IPAddress


class CiliumNodeSpec(Model):
    """Desired state of a node: IPAM and addresses."""

    ipam: IPAMSpec | None = None
    addresses: list[NodeAddress] | None = None


class IPAMStatus(Model):
    """Usage the agent reports: `used` maps address -> holder; counts pass through."""

    used: dict[IPAddress, AllocationIP] | None = None


class CiliumNodeStatus(Model):
    """What the node's agent reports."""

    ipam: IPAMStatus | None = None


class CiliumNode(Resource):
    """cilium.io/v2 CiliumNode (cluster-scoped, name = node name)."""

    spec: CiliumNodeSpec | None = None
    status: CiliumNodeStatus | None = None
