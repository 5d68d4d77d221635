"""Services: the control plane of the kube-proxy replacement and of the kube-proxy modes
(DESIGN §3, §4).

Data flows one way, as in Cilium's `pkg/loadbalancer`:

    Service + EndpointSlice objects
      -> ServiceTable (servicetable.py)     ServiceState per Service, a change tracker
           -> LBMaps (lbmaps.py)            frontends for this node, ids, BPF map contents and
                                            deltas (encoding.py), text dump, Maglev (maglev.py)
           -> Proxier (kubeproxy/)          iptables-restore / nft -f input, incremental

- `model`: ServiceState, ServicePort, Endpoint, endpoint selection (kube-proxy's rules).
- `services`: store objects -> ServiceState.
- `frontends`: ServiceState -> Frontend rows for one node (types, scopes, Local filtering).
- `allocation` + `serviceipam`: ClusterIP / NodePort / LoadBalancer IP allocation.
"""

from __future__ import annotations

from pylium.loadbalancer.allocation import Allocations, Ranges
from pylium.loadbalancer.changes import Change, ChangeTracker
from pylium.loadbalancer.frontends import Backend, Frontend, FrontendKey
from pylium.loadbalancer.lbmaps import MAPS, LBMaps, LBParams, MapDelta
from pylium.loadbalancer.model import (
    Algorithm,
    BackendState,
    Endpoint,
    FrontendType,
    L4Addr,
    ServiceName,
    ServicePort,
    ServiceState,
)
from pylium.loadbalancer.serviceipam import ServiceIPAM, ServiceLedger
from pylium.loadbalancer.servicetable import ServiceTable

__all__ = [
    "MAPS",
    "Algorithm",
    "Allocations",
    "Backend",
    "BackendState",
    "Change",
    "ChangeTracker",
    "Endpoint",
    "Frontend",
    "FrontendKey",
    "FrontendType",
    "L4Addr",
    "LBMaps",
    "LBParams",
    "MapDelta",
    "Ranges",
    "ServiceIPAM",
    "ServiceLedger",
    "ServiceName",
    "ServicePort",
    "ServiceState",
    "ServiceTable",
]
