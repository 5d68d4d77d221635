"""cilium.io/v2 kinds pylium keeps in its store: CiliumNode (a node's IPAM state) and
CiliumIdentity (a cluster-wide security identity)."""

from __future__ import annotations

from pydantic import Field, field_validator

from pylium.api.core import Resource
from pylium.api.fields import CIDR, IPAddress, Model
from pylium.api.meta import ObjectMeta


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


class IdentityMeta(ObjectMeta):
    """metadata of a CiliumIdentity: the name is the numeric identity, as in Cilium."""

    @field_validator("name")
    @classmethod
    def _numeric(cls, value: str) -> str:
        if not value.isdigit() or value != str(int(value)) or not 0 < int(value) < 1 << 24:
            raise ValueError(
                f'Invalid value: "{value}": must be a numeric identity between 1 and 16777215'
            )
        return value


class CiliumIdentity(Resource):
    """cilium.io/v2 CiliumIdentity (cluster-scoped, name = numeric id): the identity-relevant
    labels (`source:key` -> value) every pod with this identity carries."""

    metadata: IdentityMeta
    security_labels: dict[str, str] = Field(alias="security-labels")


class IPPoolBlock(Model):
    """A block of a CiliumLoadBalancerIPPool: a CIDR (start/stop ranges pass unchecked)."""

    cidr: CIDR | None = None


class LoadBalancerIPPoolSpec(Model):
    """Where LB-IPAM takes LoadBalancer addresses from (`blocks`, or the older `cidrs`)."""

    blocks: list[IPPoolBlock] | None = None
    cidrs: list[IPPoolBlock] | None = None
    disabled: bool | None = None


class CiliumLoadBalancerIPPool(Resource):
    """cilium.io/v2alpha1 CiliumLoadBalancerIPPool (cluster-scoped), read by LB-IPAM."""

    spec: LoadBalancerIPPoolSpec
