"""The kube-proxy mode's sync loop body: service changes in, one iptables-restore or nft
transaction out, incremental when it can be.

As kube-proxy's `syncProxyRules`: the first sync, and every sync after a failed one, is full
("we've lost the state needed" for a partial one); otherwise only the services the change
tracker reports are rewritten. Bookkeeping (what the kernel holds) changes only after the
applier succeeded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Protocol

from pylium.loadbalancer.changes import ChangeTracker
from pylium.loadbalancer.kubeproxy import iptables, nftables
from pylium.loadbalancer.kubeproxy.params import ProxyParams
from pylium.loadbalancer.model import ServiceName, ServicePort, ServiceState
from pylium.loadbalancer.servicetable import ServiceTable


class Mode(StrEnum):
    """kube-proxy's `--proxy-mode` values pylium implements."""

    IPTABLES = "iptables"
    NFTABLES = "nftables"


class Applier(Protocol):
    """Loads generated rules into the kernel (see `kubeproxy/applier.py`)."""

    def apply(self, mode: Mode, text: str) -> None:
        """Load `text` atomically; raise on failure."""
        ...


class Proxier:
    """Keeps one node's iptables or nftables service rules in line with a ServiceTable.

    Args:
        mode: iptables or nftables.
        params: the node's settings.
        applier: what loads the rules.
    """

    def __init__(self, mode: Mode, params: ProxyParams, applier: Applier) -> None:
        self.mode = mode
        self.params = params
        self.applier = applier
        self._needs_full = True
        self._ipt_chains: dict[ServiceName, set[str]] = {}
        self._nft: dict[ServiceName, nftables.ServiceObjects] = {}
        self._nft_delete_next: set[str] = set()
        self.full_syncs = 0
        """Full syncs done (for tests and status)."""

    def sync(
        self, table: ServiceTable, tracker: ChangeTracker[ServiceName, ServiceState] | None = None
    ) -> str:
        """Apply the table's pending changes; returns the text loaded ("" if nothing).

        nftables chains flushed by one sync are deleted by the next: call `sync` again (with
        or without changes) a moment later, as kube-proxy's timer does; `pending_deletes`
        tells whether one is due. `tracker`: this proxier's subscription to the table, when
        the table's main consumer is someone else."""
        changed = set(tracker.take() if tracker is not None else table.take_changes())
        return self.sync_states(table.states(), changed)

    def sync_states(
        self, states: Mapping[ServiceName, ServiceState], changed: set[ServiceName]
    ) -> str:
        """`sync` on a snapshot: every service's state and the names that changed (taken
        from the table in the event loop, so the rules can be written from a thread)."""
        if not changed and not self._needs_full and not self._nft_delete_next:
            return ""
        full = self._needs_full
        try:
            text = self._sync(states, None if full else changed)
        except Exception:
            self._needs_full = True
            raise
        self._needs_full = False
        self.full_syncs += full
        return text

    def request_full(self) -> None:
        """Make the next sync a full one (the periodic resync)."""
        self._needs_full = True

    @property
    def services(self) -> set[ServiceName]:
        """Services the kernel holds rules for, as far as this proxier knows."""
        if self.mode == Mode.IPTABLES:
            return set(self._ipt_chains)
        return set(self._nft)

    @property
    def pending_deletes(self) -> bool:
        """Flushed nftables chains or sets wait for the next sync to be deleted."""
        return bool(self._nft_delete_next)

    def _sync(
        self, states: Mapping[ServiceName, ServiceState], changed: set[ServiceName] | None
    ) -> str:
        if self.mode == Mode.IPTABLES:
            return self._sync_iptables(states, changed)
        return self._sync_nftables(states, changed)

    def _sync_iptables(
        self, states: Mapping[ServiceName, ServiceState], changed: set[ServiceName] | None
    ) -> str:
        touched = set(states) | set(self._ipt_chains) if changed is None else changed
        chains = {n: _ipt_chains(states[n], self.params) for n in touched if n in states}
        stale: set[str] = set()
        for name in touched:
            stale |= self._ipt_chains.get(name, set()) - chains.get(name, set())
        port_names = None
        if changed is not None:
            port_names = {sp.port_name for n in touched for sp in _ports(states.get(n))}
        text = iptables.restore_input(
            (sp for s in states.values() for sp in s.ports), self.params, port_names, stale
        )
        self.applier.apply(self.mode, text)
        for name in touched:
            if name in chains:
                self._ipt_chains[name] = chains[name]
            else:
                self._ipt_chains.pop(name, None)
        return text

    def _sync_nftables(
        self, states: Mapping[ServiceName, ServiceState], changed: set[ServiceName] | None
    ) -> str:
        if changed is None:
            new = {n: nftables.state_objects(s.ports, self.params) for n, s in states.items()}
            text = nftables.full_sync({str(n): o for n, o in new.items()}, self.params)
            self.applier.apply(self.mode, text)
            self._nft, self._nft_delete_next = new, set()
            return text
        old = {n: self._nft[n] for n in changed if n in self._nft}
        new = {
            n: nftables.state_objects(states[n].ports, self.params) for n in changed if n in states
        }
        text, stale = nftables.partial_sync(
            {str(n): o for n, o in old.items()},
            {str(n): o for n, o in new.items()},
            self._nft_delete_next,
        )
        if text:
            self.applier.apply(self.mode, text)
        for name in changed:
            if name in new:
                self._nft[name] = new[name]
            else:
                self._nft.pop(name, None)
        self._nft_delete_next = stale
        return text


def _ports(state: ServiceState | None) -> Iterable[ServicePort]:
    return state.ports if state is not None else ()


def _ipt_chains(state: ServiceState, params: ProxyParams) -> set[str]:
    out: set[str] = set()
    for sp in state.ports:
        out |= iptables.chains_of(sp, params)
    return out
