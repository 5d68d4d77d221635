"""An identity (number + labels) and its CiliumIdentity object in the store."""

from __future__ import annotations

from dataclasses import dataclass

from pylium.identity.labels import Labels
from pylium.identity.numeric import Scope, scope_of
from pylium.store import Object

KIND = "CiliumIdentity"
API_VERSION = "cilium.io/v2"
SECURITY_LABELS = "security-labels"


@dataclass(frozen=True)
class Identity:
    """A numeric security identity and the identity-relevant labels it stands for."""

    id: int
    labels: Labels

    @property
    def scope(self) -> Scope:
        """Reserved, cluster-wide or node-local."""
        return scope_of(self.id)


def identity_object(identity: Identity) -> Object:
    """The CiliumIdentity object of a cluster-wide identity (name = the number)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": str(identity.id)},
        SECURITY_LABELS: identity.labels.to_map(),
    }


def identity_from_object(obj: Object) -> Identity:
    """The identity a CiliumIdentity object holds."""
    return Identity(int(obj["metadata"]["name"]), Labels.from_map(obj.get(SECURITY_LABELS) or {}))
