"""Replays the txtar cases of `cases/` (Cilium's script-test style, pkg/loadbalancer/tests).

A case is a txtar archive: a script, then `-- name --` files. Script commands, one a line:

    node NAME                 this node (default lab-node1); only while nothing is loaded
    node-addresses IP...      its addresses (NodePort frontends, nodeport-ips), likewise
    snat-to IP                the proxiers SNAT to IP instead of masquerading, likewise
    masquerade-all            the proxiers masquerade every service connection, likewise
    algorithm random|maglev   default backend selection
    maglev-table-size M       Maglev table size (cases use 251)
    apply FILE...             add or update the objects (Service, EndpointSlice) in the files
    delete FILE...            delete them
    frontends FILE            the Frontends table (frontends.render) must equal FILE
    lb FILE                   the LB maps dump must equal FILE
    iptables FILE             the full iptables-restore input must equal FILE
    nftables FILE             the full nft -f input must equal FILE
    empty                     no service state, no map entry, no rule beyond the skeleton

Objects are validated with `pylium.api.validate` first. Each `apply`/`delete` is one sync of
the LB maps and of an incremental iptables and nftables proxier each (their applier refuses every
third load, so the full-sync recovery runs too); `empty` also requires both proxiers to hold
nothing. With PYLIUM_UPDATE_GOLDENS=1 the compared files are rewritten from what was produced.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import yaml

from pylium.api import validate
from pylium.loadbalancer.changes import ChangeTracker
from pylium.loadbalancer.frontends import render as render_frontends
from pylium.loadbalancer.kubeproxy import iptables, nftables
from pylium.loadbalancer.kubeproxy.params import ProxyParams
from pylium.loadbalancer.kubeproxy.proxier import Mode, Proxier
from pylium.loadbalancer.lbmaps import LBMaps, LBParams
from pylium.loadbalancer.model import Algorithm, ServiceName, ServiceState
from pylium.loadbalancer.servicetable import ServiceTable

CLUSTER_CIDR = IPv4Network("10.244.0.0/16")
SERVICE_CIDR = IPv4Network("10.96.0.0/16")
UPDATE = os.environ.get("PYLIUM_UPDATE_GOLDENS") == "1"
FAULT_EVERY = 3
MAX_RETRIES = 3

_SECTION = re.compile(r"^-- (\S+) --$", re.M)


@dataclass
class Archive:
    """A parsed txtar archive."""

    script: str
    files: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Archive:
        parts = _SECTION.split(text)
        files = {parts[i]: parts[i + 1].lstrip("\n") for i in range(1, len(parts), 2)}
        return cls(parts[0], files)

    def format(self) -> str:
        out = self.script
        for name, body in self.files.items():
            out += f"-- {name} --\n{body}"
        return out


class Loaded:
    """An applier that keeps what it was given (the kernel is exercised in tests/datapath)
    and refuses every FAULT_EVERY-th load, as Cilium's script tests inject map faults, so the
    proxier's fall-back to a full sync runs in every case."""

    def __init__(self, offset: int) -> None:
        """`offset`: loads to count as done already (1: the second load fails)."""
        self.texts: list[str] = []
        self.failures = 0
        self._calls = offset

    def apply(self, mode: Mode, text: str) -> None:
        self._calls += 1
        if self._calls % FAULT_EVERY == 0:
            self.failures += 1
            raise RuntimeError("injected fault")
        self.texts.append(text)


@dataclass
class Run:
    """The state of one replay."""

    reverse: bool
    node: str = "lab-node1"
    addresses: tuple[IPv4Address, ...] = ()
    snat_ip: IPv4Address | None = None
    masquerade_all: bool = False
    algorithm: Algorithm = Algorithm.RANDOM
    table_size: int = 16381
    table: ServiceTable = field(default_factory=ServiceTable)
    maps: LBMaps | None = None
    mismatches: list[str] = field(default_factory=list)
    proxiers: list[tuple[Proxier, ChangeTracker[ServiceName, ServiceState]]] = field(
        default_factory=list
    )
    """Incremental proxiers of both modes, synced at every step beside the LB maps."""

    def sync(self) -> None:
        if not self.proxiers:
            self.proxiers = [
                (Proxier(mode, self.proxy_params(), Loaded(1)), self.table.subscribe())
                for mode in Mode
            ]
        self.lb().sync(self.table.take_changes())
        for proxier, tracker in self.proxiers:
            sync_with_retries(proxier, self.table, tracker)

    def lb(self) -> LBMaps:
        if self.maps is None:
            self.maps = LBMaps(LBParams(self.node, self.addresses, self.algorithm, self.table_size))
        return self.maps

    def proxy_params(self) -> ProxyParams:
        return ProxyParams(
            self.node,
            self.addresses,
            CLUSTER_CIDR,
            SERVICE_CIDR,
            masquerade_all=self.masquerade_all,
            snat_ip=self.snat_ip,
        )

    def ports(self) -> list[Any]:
        return [sp for s in self.table.states().values() for sp in s.ports]

    def iptables(self) -> str:
        return iptables.restore_input(self.ports(), self.proxy_params())

    def nftables(self) -> str:
        params = self.proxy_params()
        objects = {
            str(n): nftables.state_objects(s.ports, params) for n, s in self.table.states().items()
        }
        return nftables.full_sync(objects, params)


def _objects(archive: Archive, names: list[str], reverse: bool) -> list[dict[str, Any]]:
    docs = []
    for name in names:
        docs += [validate(d) for d in yaml.safe_load_all(archive.files[name]) if d]
    return docs[::-1] if reverse else docs


def replay(path: Path, reverse: bool) -> list[str]:
    """Run the case; returns mismatch descriptions (empty: it passed). Rewrites goldens when
    PYLIUM_UPDATE_GOLDENS=1 (forward replay only)."""
    archive = Archive.parse(path.read_text())
    run = Run(reverse)
    for lineno, line in enumerate(archive.script.splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        cmd, args = words[0], words[1:]
        where = f"{path.name}:{lineno} ({'reverse' if reverse else 'forward'})"
        if cmd in ("node", "node-addresses", "snat-to", "masquerade-all"):
            if run.maps is not None and not run.maps.empty():
                raise ValueError(f"{where}: {cmd} while services are loaded")
            run.maps = None  # the next sync starts a fresh node
            run.proxiers = []
            if cmd == "node":
                run.node = args[0]
            elif cmd == "snat-to":
                run.snat_ip = IPv4Address(args[0])
            elif cmd == "masquerade-all":
                run.masquerade_all = True
            else:
                run.addresses = tuple(IPv4Address(a) for a in args)
        elif cmd == "algorithm":
            run.algorithm = Algorithm(args[0])
        elif cmd == "maglev-table-size":
            run.table_size = int(args[0])
        elif cmd in ("apply", "delete"):
            files = args[::-1] if reverse else args
            for obj in _objects(archive, files, reverse):
                kind = obj["kind"]
                if cmd == "apply":
                    getattr(run.table, f"upsert_{_kind(kind)}")(obj)
                else:
                    getattr(run.table, f"delete_{_kind(kind)}")(obj)
            run.sync()
        elif cmd in ("frontends", "lb", "iptables", "nftables"):
            if cmd == "frontends":
                actual = render_frontends(run.lb().frontends())
            else:
                actual = run.lb().dump() if cmd == "lb" else getattr(run, cmd)()
            expected = archive.files.get(args[0])
            if actual != expected:
                if UPDATE and not reverse:
                    archive.files[args[0]] = actual
                else:
                    run.mismatches.append(
                        f"{where}: {cmd} differs from {args[0]}:\n--- expected\n{expected}"
                        f"--- actual\n{actual}"
                    )
        elif cmd == "empty":
            skeleton = Run(
                reverse,
                addresses=run.addresses,
                snat_ip=run.snat_ip,
                masquerade_all=run.masquerade_all,
            )
            if run.table.states() or not run.lb().empty():
                run.mismatches.append(f"{where}: state left: {run.lb().dump()}")
            if run.iptables() != skeleton.iptables() or run.nftables() != skeleton.nftables():
                run.mismatches.append(f"{where}: rules left beyond the skeleton")
            for proxier, tracker in run.proxiers:
                sync_with_retries(proxier, run.table, tracker)  # the deferred deletes
                if proxier.services or proxier.pending_deletes:
                    run.mismatches.append(f"{where}: {proxier.mode} proxier still holds rules")
                assert isinstance(proxier.applier, Loaded)
                if not proxier.applier.failures or proxier.full_syncs < 2:
                    run.mismatches.append(f"{where}: no injected fault reached {proxier.mode}")
        else:
            raise ValueError(f"{where}: unknown command {cmd!r}")
    if UPDATE and not reverse:
        path.write_text(archive.format())
    return run.mismatches


def sync_with_retries(
    proxier: Proxier, table: ServiceTable, tracker: ChangeTracker[ServiceName, ServiceState]
) -> None:
    """Sync until the (fault-injecting) applier takes it, as the agent's retry loop would."""
    for _ in range(MAX_RETRIES):
        try:
            proxier.sync(table, tracker)
            return
        except RuntimeError:
            continue
    raise AssertionError(f"{proxier.mode} sync failed {MAX_RETRIES} times")


def _kind(kind: str) -> str:
    return {"Service": "service", "EndpointSlice": "slice"}[kind]
