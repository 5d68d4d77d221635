"""`EndpointLookup` over the agent's endpoint list: address -> pod, ifindex -> device name.

The list comes from a callable (the agent passes `EndpointManager.endpoints`), indexed on
demand: events arrive far faster than pods change, so the index is rebuilt at most every
`max_age` seconds, and sooner when an address is missing (a pod that was just created).
Addresses no endpoint owns are looked up in the ipcache when the agent has one (pods on other
nodes by name, node addresses as `host`/`remote-node`, the rest `world`), else by Cilium's
reserved identities: the router IP is `host`, an address outside the node's pod CIDR `world`.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

from pylium.endpoint.model import Endpoint as AgentEndpoint
from pylium.hubble.flow import Endpoint
from pylium.identity import IDENTITY_HOST, IDENTITY_WORLD, RESERVED_NAMES, Identity, reserved_labels
from pylium.ipcache.table import IPCacheTable

_HOST = Endpoint(identity=IDENTITY_HOST, labels=("reserved:host",))
_WORLD = Endpoint(identity=IDENTITY_WORLD, labels=("reserved:world",))


class _Index(NamedTuple):
    by_ip: dict[str, Endpoint]
    ifnames: dict[int, str]
    built_at: float


class EndpointsLookup:
    """Satisfies `hubble.parser.EndpointLookup` from a list of agent endpoints."""

    def __init__(
        self,
        endpoints: Callable[[], Iterable[AgentEndpoint]],
        router_ip: str = "",
        pod_cidr: str = "",
        max_age: float = 1.0,
        min_age_on_miss: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        ipcache: Callable[[str], Endpoint | None] | None = None,
    ) -> None:
        self._endpoints = endpoints
        self._ipcache = ipcache
        self._router_ip = router_ip
        self._pod_cidr = ipaddress.IPv4Network(pod_cidr) if pod_cidr else None
        self._max_age = max_age
        self._min_age_on_miss = min_age_on_miss
        self._clock = clock
        self._index = _Index({}, {}, float("-inf"))

    def endpoint_by_ip(self, ip: str) -> Endpoint | None:
        """The pod at `ip`, else `host`/`world` by address, else None (unknown pod address)."""
        found = self._fresh(lambda index: ip in index.by_ip).by_ip.get(ip)
        if found is not None:
            return found
        if self._ipcache is not None:
            return self._ipcache(ip)
        if ip == self._router_ip:
            return _HOST
        if self._pod_cidr is not None and ipaddress.IPv4Address(ip) not in self._pod_cidr:
            return _WORLD
        return None

    def interface_name(self, ifindex: int) -> str:
        """The host-side veth name of the endpoint on `ifindex` ("" when none)."""
        return self._fresh(lambda index: ifindex in index.ifnames).ifnames.get(ifindex, "")

    def _fresh(self, hit: Callable[[_Index], bool]) -> _Index:
        age = self._clock() - self._index.built_at
        if age > self._max_age or (age > self._min_age_on_miss and not hit(self._index)):
            self._index = self._build()
        return self._index

    def _build(self) -> _Index:
        by_ip: dict[str, Endpoint] = {}
        ifnames: dict[int, str] = {}
        for ep in self._endpoints():
            if ep.ipv4:
                by_ip[ep.ipv4.split("/")[0]] = flow_endpoint(ep)
            if ep.host_ifindex:
                ifnames[ep.host_ifindex] = ep.host_ifname
        return _Index(by_ip, ifnames, self._clock())


class Identities(Protocol):
    """What the lookup needs of the identity allocator: the labels of a number."""

    def get(self, identity: int) -> Identity | None: ...


IPCACHE_ANSWERS_MAX = 65536
"""Cached ipcache answers at the most; the cache starts over when full."""


class IPCacheEndpoints:
    """Address -> flow endpoint from the ipcache: a pod of any node (namespace, name, its
    identity's labels), a node address or the world (their reserved labels). Answers are cached
    until the table changes (flows ask far more often than pods move), except one whose identity
    the allocator does not know yet: its labels come with a later flow."""

    def __init__(self, table: IPCacheTable, allocator: Identities) -> None:
        self._table = table
        self._allocator = allocator
        self._cache: dict[str, Endpoint | None] = {}
        self._revision = table.revision

    def __call__(self, ip: str) -> Endpoint | None:
        # Flows from many outside addresses would grow the cache without end while no pod moves.
        if self._revision != self._table.revision or len(self._cache) >= IPCACHE_ANSWERS_MAX:
            self._cache.clear()
            self._revision = self._table.revision
        if ip in self._cache:
            return self._cache[ip]
        answer = self._resolve(ip)
        if answer is None or answer.labels:
            self._cache[ip] = answer
        return answer

    def _resolve(self, ip: str) -> Endpoint | None:
        entry = self._table.lookup(ipaddress.IPv4Address(ip))
        if entry is None:
            return None
        identity = self._allocator.get(entry.identity)
        if identity is None and entry.identity in RESERVED_NAMES:
            identity = Identity(entry.identity, reserved_labels(entry.identity))
        labels = tuple(sorted(str(label) for label in identity.labels)) if identity else ()
        kind, _, rest = entry.owner.partition("/")
        if kind == "pod":
            namespace, _, name = rest.partition("/")
            return Endpoint(
                identity=entry.identity, namespace=namespace, labels=labels, pod_name=name
            )
        return Endpoint(identity=entry.identity, labels=labels)


def flow_endpoint(ep: AgentEndpoint) -> Endpoint:
    """The flow view of an agent endpoint. Pods carry Cilium's namespace label; identities
    arrive with the identity component (0 until then)."""
    labels = (f"k8s:io.kubernetes.pod.namespace={ep.pod_namespace}",) if ep.pod_namespace else ()
    return Endpoint(ID=ep.id, namespace=ep.pod_namespace, labels=labels, pod_name=ep.pod_name)
