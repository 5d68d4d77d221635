"""Node routes for native routing: every other node's pod CIDR via that node's address.

Modules, one concern each:

- `desired`: the routes a node wants, computed from CiliumNode and Node objects (pure)
- `kernel`: the node's routes in the kernel (a protocol, and its pyroute2 implementation)
- `component`: `NodeRoutes`, the component that watches the store and reconciles the kernel (the
  agent runs it in native routing)
- `mode`: `RoutingMode`, native or tunnel
"""

from pylium.routing.component import NodeRoutes, RoutesParams
from pylium.routing.desired import NodeRoute, desired_routes
from pylium.routing.kernel import PyrouteRouteKernel, RouteKernel
from pylium.routing.mode import RoutingMode

__all__ = [
    "NodeRoute",
    "NodeRoutes",
    "PyrouteRouteKernel",
    "RouteKernel",
    "RoutesParams",
    "RoutingMode",
    "desired_routes",
]
