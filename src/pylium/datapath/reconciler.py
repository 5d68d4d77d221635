"""The endpoint datapath reconciler: the one component that puts endpoints into the kernel.

At `start` it loads from-container and to-container for the node (router IP and pod CIDR as
`.rodata`) with their maps pinned by name under the node's pin directory; maps already pinned
there are re-used, so a restarted agent keeps endpoint entries, conntrack and counters.

Per endpoint (`update`, idempotent): its `pylium_lxc`/`pylium_lxc_if` entries, then two tcx
links on its host-side veth, from-container on ingress (what the pod sends) and to-container on
egress (what it receives), pinned as `<pin_dir>/links/<hostIfname>_{ingress,egress}`. A pinned
link outlives the agent, so traffic never depends on the agent running. On restart `update`
finds the pin, and if it is still attached to the endpoint's device swaps the freshly loaded
program in with `bpf_link_update` (atomic: no packet passes without a program); a defunct pin
(its device was deleted) is replaced by a new attachment.

`delete` unpins the links and removes the map entries; `prune` collects every map key and link
pin that no desired row accounts for, then detaches and deletes them (already gone is
success).
Conntrack entries past their lifetime are deleted at start and every `ct_gc_interval` seconds.

Identities (`use_ipcache`): each endpoint's security identity, registered with the ipcache on
`update`, goes into its `pylium_lxc` entries and follows the ipcache when the pod's identity
changes (a namespace relabel); `pylium_ipcache4` is kept equal to the ipcache table
(`datapath.ipcache`). Tunnel routing (`DatapathParams.tunnel`): the VXLAN device and the overlay
program (`datapath.overlay`) come up at `start`, before any endpoint.

Pin layout::

    <pin_dir>/pylium_lxc, pylium_lxc_if, pylium_ct4_global, pylium_metrics, pylium_events,
             pylium_ipcache4, overlay_ingress (tunnel routing)
    <pin_dir>/links/<hostIfname>_ingress, <hostIfname>_egress

Removing `<pin_dir>` after the agent stopped frees everything (the links detach with their
last reference); `pylium lab down` does that per node.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from pylium.datapath import conntrack
from pylium.datapath.bpffs import require_bpffs
from pylium.datapath.conntrack import CtFlags, TupleFlags
from pylium.datapath.endpoints import CtSample, EndpointRow, MetricSample
from pylium.datapath.errors import BpfError
from pylium.datapath.ipcache import IPCacheMapReconciler, read_ipcache
from pylium.datapath.links import Direction as Hook
from pylium.datapath.links import Link, ensure_pinned_tcx, remove_pinned
from pylium.datapath.loader import Program
from pylium.datapath.lxc import (
    MAP_EVENTS,
    EndpointInfo,
    EndpointKey,
    IfindexKey,
    LxcObjects,
    NodeConfig,
)
from pylium.datapath.metrics import read_metrics
from pylium.datapath.overlay import Overlay, TunnelRoutes, ensure_vxlan
from pylium.identity import IDENTITY_INIT
from pylium.ipcache import IPCache

log = logging.getLogger(__name__)

LINKS_DIR = "links"
"""Sub-directory of the pin directory holding the endpoints' tcx links."""

_HOOKS = (Hook.INGRESS, Hook.EGRESS)


@dataclass(frozen=True)
class DatapathParams:
    """Settings of the endpoint datapath."""

    pin_dir: Path
    """The node's bpffs directory (`paths.bpffs_node_dir(node)`)."""
    ct_gc_interval: float = 30.0
    """Seconds between conntrack garbage collections."""
    tunnel: bool = False
    """Tunnel routing: remote pods are reached through the node's VXLAN device."""
    mtu: int = 1500
    """The pods' MTU (the VXLAN device gets it too)."""
    identity_timeout: float = 5.0
    """Seconds an endpoint update waits for its identity before using init (5) until the
    ipcache has it."""
    trace_events: bool = True
    """False: the programs write no trace events (flow export off; drops still report)."""


def endpoint_info(row: EndpointRow, identity: int = 0) -> EndpointInfo:
    """The `pylium_lxc`/`pylium_lxc_if` value of a row."""
    return EndpointInfo.make(
        ifindex=row.host_ifindex,
        lxc_id=row.id,
        ip=row.ipv4,
        mac=row.mac,
        node_mac=row.host_mac,
        sec_identity=identity,
    )


class BpfDatapath:
    """The real `Datapath`: libbpf objects, maps and tcx links under one pin directory."""

    def __init__(self, params: DatapathParams) -> None:
        self._params = params
        self._objs: LxcObjects | None = None
        self._overlay: Overlay | None = None
        self._tunnel_routes: TunnelRoutes | None = None
        self._gc_task: asyncio.Task[None] | None = None
        self._ipcache: IPCache | None = None
        self._ipcache_map: IPCacheMapReconciler | None = None
        self._ipcache_task: asyncio.Task[None] | None = None
        self._identities: dict[int, tuple[EndpointRow, int]] = {}
        """Endpoint id -> (row, identity in its map entries)."""

    @property
    def pin_dir(self) -> Path:
        return self._params.pin_dir

    @property
    def links_dir(self) -> Path:
        return self._params.pin_dir / LINKS_DIR

    @property
    def events_pin(self) -> Path:
        """The pinned `pylium_events` ring buffer (the flow observer reads it)."""
        return self._params.pin_dir / MAP_EVENTS

    def link_pin(self, host_ifname: str, hook: Hook) -> Path:
        """Where the link of one endpoint's hook is pinned."""
        return self.links_dir / f"{host_ifname}_{hook.value}"

    @property
    def objs(self) -> LxcObjects:
        if self._objs is None:
            raise RuntimeError("datapath used before start()")
        return self._objs

    @property
    def ipcache_map(self) -> IPCacheMapReconciler | None:
        """The ipcache map reconciler (None without `use_ipcache`)."""
        return self._ipcache_map

    def use_ipcache(self, ipcache: IPCache) -> None:
        """Take identities from this (started) ipcache and mirror its table into the map;
        call before `start`."""
        self._ipcache = ipcache

    def read_ipcache(self) -> dict[IPv4Network, bytes]:
        """`pylium_ipcache4` as the kernel holds it: prefix -> raw value."""
        return read_ipcache(self.objs.ipcache)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, router_ip: str, pod_cidr: str) -> None:
        require_bpffs(self.pin_dir)
        tunnel_ifindex = 0
        if self._params.tunnel:
            tunnel_ifindex = await asyncio.to_thread(ensure_vxlan, self._params.mtu)
        config = NodeConfig(
            router_ip=router_ip,
            pod_cidr=pod_cidr,
            tunnel_ifindex=tunnel_ifindex,
            trace_events=self._params.trace_events,
        )
        self._objs = LxcObjects.load(config, pin_dir=self.pin_dir)
        self.links_dir.mkdir(exist_ok=True)
        if tunnel_ifindex:
            self._overlay = Overlay.load(config, self.pin_dir)
            await asyncio.to_thread(self._overlay.attach, tunnel_ifindex, self.pin_dir)
            self._tunnel_routes = TunnelRoutes(tunnel_ifindex, router_ip, self._params.mtu)
        if self._ipcache is not None:
            self._ipcache_map = IPCacheMapReconciler(
                self._ipcache, self._objs.ipcache, on_change=self._on_ipcache_change
            )
            self._ipcache_task = asyncio.create_task(self._ipcache_map.run(), name="ipcache-map")
        log.info(
            "datapath loaded under %s (programs %d/%d)",
            self.pin_dir,
            self._objs.from_container.id,
            self._objs.to_container.id,
        )
        self.gc_conntrack()
        self._gc_task = asyncio.create_task(self._gc_loop(), name="ct-gc")

    async def stop(self) -> None:
        for task in (self._gc_task, self._ipcache_task):
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        self._gc_task = self._ipcache_task = None
        if self._overlay is not None:
            self._overlay.close()
            self._overlay = None
        if self._objs is not None:
            self._objs.close()
            self._objs = None

    # --- reconciliation -------------------------------------------------------------------

    async def update(self, row: EndpointRow) -> None:
        identity = await self._identity(row)
        self._identities[row.id] = (row, identity)
        # Map entries first: the programs recognise the device from its first packet on.
        self.objs.add_endpoint(endpoint_info(row, identity))
        # Each tcx attach waits for an RCU grace period under the RTNL lock (~12 ms here), so
        # off the event loop; every agent thread is in the node netns, where the ifindex is.
        await asyncio.to_thread(self._ensure_links, row)

    async def _identity(self, row: EndpointRow) -> int:
        """The endpoint's identity from the ipcache; init (5) while the ipcache cannot tell
        (its Pod not yet in the store, the ipcache still syncing), 0 without an ipcache."""
        if self._ipcache is None or not row.pod_name or not row.ipv4:
            return 0
        try:
            return await asyncio.wait_for(
                self._ipcache.endpoint_identity(
                    row.pod_namespace, row.pod_name, IPv4Address(row.ipv4)
                ),
                self._params.identity_timeout,
            )
        except TimeoutError:
            log.warning("no identity for endpoint %d yet: init until the ipcache has it", row.id)
            return IDENTITY_INIT

    async def _on_ipcache_change(self) -> None:
        self._refresh_identities()
        if self._tunnel_routes is not None and self._ipcache is not None:
            # Every other node's pod CIDR (tunnelled, not a single address) goes into the tunnel.
            cidrs = {
                e.prefix
                for e in self._ipcache.table.entries().values()
                if e.tunnel_endpoint is not None and 0 < e.prefix.prefixlen < 32
            }
            try:
                await asyncio.to_thread(self._tunnel_routes.sync, cidrs)
            except Exception:  # netlink refused: the next ipcache change retries
                log.exception("syncing the routes into the tunnel failed")

    def _refresh_identities(self) -> None:
        """Rewrite the map entries of endpoints whose identity the ipcache changed."""
        if self._ipcache is None:
            return
        table = self._ipcache.table
        for endpoint_id, (row, identity) in list(self._identities.items()):
            entry = table.get(IPv4Network(row.ipv4))
            owner = f"pod/{row.pod_namespace}/{row.pod_name}"
            if entry is None or entry.owner != owner or entry.identity == identity:
                continue
            log.info("endpoint %d: identity %d -> %d", endpoint_id, identity, entry.identity)
            try:
                self.objs.add_endpoint(endpoint_info(row, entry.identity))
            except BpfError:
                log.exception("updating the identity of endpoint %d failed", endpoint_id)
                continue
            self._identities[endpoint_id] = (row, entry.identity)

    def _ensure_links(self, row: EndpointRow) -> None:
        for hook in _HOOKS:
            self._ensure_link(row, hook)

    def _program(self, hook: Hook) -> Program:
        return self.objs.from_container if hook is Hook.INGRESS else self.objs.to_container

    def _ensure_link(self, row: EndpointRow, hook: Hook) -> None:
        pin = self.link_pin(row.host_ifname, hook)
        ensure_pinned_tcx(pin, row.host_ifindex, self._program(hook), hook)

    async def delete(self, row: EndpointRow) -> None:
        # Unpinning drops the links' last reference: the kernel detaches them shortly after
        # (bpffs frees lazily), and at once when the device goes, which DEL does next.
        for hook in _HOOKS:
            self.link_pin(row.host_ifname, hook).unlink(missing_ok=True)
        self._identities.pop(row.id, None)
        if self._ipcache is not None and row.pod_name and row.ipv4:
            self._ipcache.forget_endpoint(row.pod_namespace, row.pod_name, IPv4Address(row.ipv4))
        objs = self.objs
        if row.ipv4:
            key = EndpointKey.of(row.ipv4)
            entry = objs.lxc.get(key)
            # Only this endpoint's entry: the address may belong to another one by now.
            if entry is not None and entry.ifindex == row.host_ifindex:
                objs.lxc.delete(key, missing_ok=True)
        if row.host_ifindex:
            objs.lxc_if.delete(IfindexKey(ifindex=row.host_ifindex), missing_ok=True)

    async def prune(self, desired: Iterable[EndpointRow]) -> None:
        rows = list(desired)
        want_ips = {ipaddress.IPv4Address(r.ipv4).packed for r in rows if r.ipv4}
        want_ifindexes = {r.host_ifindex for r in rows}
        want_pins = {self.link_pin(r.host_ifname, h).name for r in rows for h in _HOOKS}
        objs = self.objs
        # Collect everything stale before deleting anything.
        stale_ips = [k for k in objs.lxc if bytes(k.ip4) not in want_ips]
        stale_ifindexes = [k for k in objs.lxc_if if k.ifindex not in want_ifindexes]
        stale_pins = [p for p in self.links_dir.iterdir() if p.name not in want_pins]
        errors: list[Exception] = []
        for pin in stale_pins:
            log.info("pruning link %s", pin.name)
            try:
                remove_pinned(pin)
            except OSError as err:
                errors.append(err)
        for ip_key in stale_ips:
            try:
                objs.lxc.delete(ip_key, missing_ok=True)
            except BpfError as err:
                errors.append(err)
        for if_key in stale_ifindexes:
            try:
                objs.lxc_if.delete(if_key, missing_ok=True)
            except BpfError as err:
                errors.append(err)
        if stale_ips or stale_ifindexes:
            log.info("pruned %d+%d endpoint map entries", len(stale_ips), len(stale_ifindexes))
        if errors:
            raise ExceptionGroup("prune of the endpoint datapath", errors)

    async def verify(self, row: EndpointRow) -> list[str]:
        objs = self.objs
        problems: list[str] = []
        want = bytes(endpoint_info(row, self._identities.get(row.id, (row, 0))[1]))
        by_ip = objs.lxc.get(EndpointKey.of(row.ipv4))
        if by_ip is None or bytes(by_ip) != want:
            problems.append(f"datapath entry of {row.ipv4} in pylium_lxc is missing or stale")
        by_if = objs.lxc_if.get(IfindexKey(ifindex=row.host_ifindex))
        if by_if is None or bytes(by_if) != want:
            problems.append(
                f"datapath entry of ifindex {row.host_ifindex} in pylium_lxc_if is missing or stale"
            )
        for hook in _HOOKS:
            pin = self.link_pin(row.host_ifname, hook)
            what = f"{self._program(hook).name} on {hook.value} of {row.host_ifname}"
            if not pin.exists():
                problems.append(f"{what} is not attached (no pin {pin})")
                continue
            with Link.from_pin(pin) as link:
                info = link.info()
            if info.ifindex != row.host_ifindex or info.prog_id != self._program(hook).id:
                problems.append(f"{what} is not attached (stale link {pin})")
        return problems

    # --- read-outs and conntrack GC -------------------------------------------------------

    def metrics(self) -> list[MetricSample]:
        counters = read_metrics(self.objs.metrics)
        return [
            MetricSample(
                reason=int(reason),
                reason_name=reason.name,
                direction=direction.name.lower(),
                packets=c.packets,
                bytes=c.bytes,
            )
            for (reason, direction), c in sorted(counters.items())
        ]

    def conntrack(self) -> list[CtSample]:
        now = conntrack.monotonic_seconds()
        out: list[CtSample] = []
        for key, entry in self.objs.ct4.items():
            out.append(
                CtSample(
                    scope=_SCOPES[TupleFlags(key.flags)],
                    proto=key.nexthdr,
                    src=str(ipaddress.IPv4Address(bytes(key.saddr))),
                    sport=socket.ntohs(key.sport),
                    dst=str(ipaddress.IPv4Address(bytes(key.daddr))),
                    dport=socket.ntohs(key.dport),
                    expires_in=entry.lifetime - now,
                    tx_packets=entry.tx_packets,
                    tx_bytes=entry.tx_bytes,
                    rx_packets=entry.rx_packets,
                    rx_bytes=entry.rx_bytes,
                    flags=tuple(f.name for f in CtFlags if f.name and entry.flags & f),
                )
            )
        return sorted(out, key=lambda s: (s.src, s.dst, s.proto, s.sport, s.dport, s.scope))

    def gc_conntrack(self) -> int:
        """Delete expired conntrack entries now; returns how many."""
        deleted = conntrack.gc(self.objs.ct4)
        if deleted:
            log.info("conntrack GC deleted %d expired entries", deleted)
        return deleted

    async def _gc_loop(self) -> None:
        while True:
            await asyncio.sleep(self._params.ct_gc_interval)
            try:
                self.gc_conntrack()
            except BpfError:
                log.exception("conntrack garbage collection failed")


_SCOPES = {TupleFlags.OUT: "egress", TupleFlags.IN: "ingress"}
"""Conntrack scopes by the direction their program sees (as the metrics' directions)."""
