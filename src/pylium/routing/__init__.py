"""Node routes for native routing: every other node's pod CIDR via that node's address.

Modules, one concern each:

- `desired`: the routes a node wants, computed from CiliumNode and Node objects (pure)
- `kernel`: the node's routes in the kernel (a protocol, and its pyroute2 implementation)
- `component`: `NodeRoutes`, the component that watches the store and reconciles the kernel
- `__main__`: `python -m pylium.routing`, the component as a process of its own (the lab runs it
  per node until the agent wires it in)
"""

from pylium.routing.component import NodeRoutes, RoutesParams
from pylium.routing.desired import NodeRoute, desired_routes
from pylium.routing.kernel import PyrouteRouteKernel, RouteKernel

__all__ = [
    "NodeRoute",
    "NodeRoutes",
    "PyrouteRouteKernel",
    "RouteKernel",
    "RoutesParams",
    "desired_routes",
]
