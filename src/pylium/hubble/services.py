"""Service names of socket-LB translation events (rev-NAT id -> flow.Service).

bpf/sock.c reports the translated service by its rev-NAT id; the agent's `LBMaps` knows
which frontend address has that id (`reverse_nat`) and which Service owns the frontend.
Names are cached per (id, frontend) pair, so an id re-used by another frontend is looked up
afresh; the cache is cleared when it outgrows the node's frontends (bounded memory).
"""

from __future__ import annotations

from pylium.hubble.flow import Service
from pylium.loadbalancer.frontends import FrontendKey
from pylium.loadbalancer.lbmaps import REVNAT, LBMaps
from pylium.loadbalancer.model import L4Addr


class ServiceNames:
    """Callable naming the Service of a rev-NAT id (None: not a current frontend)."""

    def __init__(self, maps: LBMaps) -> None:
        self._maps = maps
        self._cache: dict[tuple[int, L4Addr], Service] = {}

    def __call__(self, rev_nat_index: int) -> Service | None:
        revnat: dict[int, L4Addr] = self._maps.contents[REVNAT]
        address = revnat.get(rev_nat_index)
        if address is None:
            return None
        key = (rev_nat_index, address)
        found = self._cache.get(key)
        if found is not None:
            return found
        frontends = self._maps.frontends()
        fe = frontends.get(FrontendKey(address)) or frontends.get(FrontendKey(address, True))
        if fe is None:
            return None
        if len(self._cache) > 2 * len(revnat):
            self._cache.clear()
        found = self._cache[key] = Service(fe.service.name, fe.service.namespace)
        return found
