"""Endpoints: the lifecycle of a pod's network interface on this node."""

from __future__ import annotations

from pylium.endpoint.manager import EndpointManager, EndpointParams
from pylium.endpoint.model import (
    CheckFailed,
    Endpoint,
    EndpointError,
    EndpointNotFound,
    EndpointRequest,
    InterfaceExists,
    InvalidRequest,
    NetnsMissing,
)

__all__ = [
    "CheckFailed",
    "Endpoint",
    "EndpointError",
    "EndpointManager",
    "EndpointNotFound",
    "EndpointParams",
    "EndpointRequest",
    "InterfaceExists",
    "InvalidRequest",
    "NetnsMissing",
]
