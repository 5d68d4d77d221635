"""The endpoint manager: the lifecycle of pod interfaces (CNI ADD, DEL, CHECK, GC) and restore.

Ordering that makes a crash at any point leak nothing:

- ADD writes the state file (`creating`) before touching IPAM or the kernel; a restart finds
  the file and rolls back: delete the host veth (the pair goes with it), release the owner's
  addresses, remove the file.
- DEL writes `deleting` first; a restart finishes it. DEL returns once the datapath entries,
  the host route, the address and the state file are gone; deleting the veth pair itself
  (~30-50 ms of kernel RCU waits with tcx links) finishes in the background. A later ADD in
  the same pod namespace or of the same host interface waits for it, `stop()` waits for all,
  and a restart deletes any veth no endpoint owns, so nothing is left either way.
- ADD writes the pod's policy (`before_plumb`) before its veth exists and attaches the
  datapath (map entries, tc programs) before it routes the pod's address to the veth, so no
  packet reaches the pod past neither programs nor policy (a lab test probed that window); it
  writes `ready` last. DEL deletes the node's route to the pod, then detaches, then unplumbs.
- At start, `lxc*` interfaces no endpoint owns are deleted, addresses no endpoint owns are
  released, and the datapath is reconciled against the ready endpoints: stale entries and links
  pruned, the rest updated (re-opening pinned links, `EndpointManager.start`).

Requests for one (containerID, ifname) are serialised; different attachments run in parallel.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from pylium.datapath.endpoints import EndpointDatapath
from pylium.datapath.netlink import Netlink
from pylium.endpoint import plumbing
from pylium.endpoint.ids import EndpointIds
from pylium.endpoint.model import (
    HOST_IFNAME_PREFIX,
    CheckFailed,
    Endpoint,
    EndpointNotFound,
    EndpointRequest,
    host_ifname,
    owner_of,
)
from pylium.endpoint.statedir import EndpointStateDir
from pylium.ipam import NodeAllocator

log = logging.getLogger(__name__)

BEFORE_PLUMB_LOGGED_S = 0.02
"""A `before_plumb` at least this long is logged: the policy hook waited for the pod to be
known (it polls every 20 ms), which is how one sees whether ADD ever waits in practice."""

Key = tuple[str, str]


@dataclass(frozen=True)
class EndpointParams:
    """Settings of the endpoint manager."""

    state_dir: Path
    """Where endpoint state files live (`<state_dir>/endpoints/<id>.json`)."""
    delete_queue_dir: Path
    """CNI DELs queued while the agent was down (`paths.delete_queue_dir(socket)`)."""
    mtu: int
    """Pod interface MTU unless the request names one."""
    ipam_gc_interval: float = 60.0
    """Seconds between garbage collections of addresses whose endpoint is gone."""
    ipam_gc_grace: float = 600.0
    """Addresses taken through POST /v1/ipam are kept this long without an endpoint."""
    on_step: Callable[[str], None] | None = None
    """Called after each named step of an ADD ("state-written", "ip-allocated", the plumbing
    steps, "ready"); the crash tests make it exit the process. None in production."""
    before_plumb: Callable[[Endpoint], Awaitable[None]] | None = None
    """Awaited during ADD once the endpoint has its address, before its interface exists or
    its programs are attached: the agent writes the endpoint's policy here."""


class EndpointManager:
    """Creates, deletes, checks and garbage-collects endpoints. Start with start()."""

    def __init__(
        self,
        params: EndpointParams,
        netlink: Netlink,
        ipam: NodeAllocator,
        datapath: EndpointDatapath,
    ):
        self._params = params
        self._nl = netlink
        self._dp = datapath
        self._ipam = ipam
        self._states = EndpointStateDir(params.state_dir / "endpoints")
        self._ids = EndpointIds()
        self._by_id: dict[int, Endpoint] = {}
        self._locks: dict[Key, asyncio.Lock] = {}
        self._lock_users: dict[Key, int] = {}
        self._in_flight: set[str] = set()
        self._gc_task: asyncio.Task[None] | None = None
        self._unplumbing: dict[str, tuple[str, asyncio.Task[None]]] = {}
        """Host ifname -> (pod netns, task deleting the veth pair) of DELs still finishing."""

    @property
    def states(self) -> EndpointStateDir:
        """The state directory (read by health and leak checks)."""
        return self._states

    async def start(self) -> None:
        """Restore endpoints from disk, clean what a crash left, reconcile the datapath, drain
        queued DELs, start GC."""
        for ep in self._states.load_all():
            self._ids.reserve(ep.id)
            self._by_id[ep.id] = ep
        for ep in list(self._by_id.values()):
            if ep.state == "creating":
                log.warning("rolling back endpoint %d (%s): ADD was interrupted", ep.id, ep.owner)
                await self._rollback(ep)
            elif ep.state == "deleting":
                log.warning("finishing DEL of endpoint %d (%s)", ep.id, ep.owner)
                await self._remove(ep)
        await self.unplumbed()
        await self._delete_orphan_links()
        await self._reconcile_datapath()
        self._ipam.gc(self._live_owners(), grace=self._params.ipam_gc_grace)
        await self._drain_delete_queue()
        self._gc_task = asyncio.create_task(self._gc_loop(), name="ipam-gc")

    async def stop(self) -> None:
        """Stop the GC task and wait for it and for veth deletions still running."""
        if self._gc_task is not None:
            self._gc_task.cancel()
            with suppress(asyncio.CancelledError):
                await self._gc_task
            self._gc_task = None
        await self.unplumbed()

    async def unplumbed(self, netns: str | None = None, host_ifname: str | None = None) -> None:
        """Wait until the veth pairs of finished DELs are deleted: all of them, or only those
        in pod namespace `netns` or named `host_ifname`."""
        pending = [
            task
            for name, (ns, task) in self._unplumbing.items()
            if (netns is None and host_ifname is None) or ns == netns or name == host_ifname
        ]
        if pending:
            await asyncio.wait(pending)

    # --- queries ---------------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        """Every endpoint, by id."""
        return [self._by_id[i] for i in sorted(self._by_id)]

    def get(self, endpoint_id: int) -> Endpoint:
        """One endpoint by id; raises EndpointNotFound."""
        try:
            return self._by_id[endpoint_id]
        except KeyError:
            raise EndpointNotFound(f"no endpoint with id {endpoint_id}") from None

    def find(self, container_id: str, ifname: str) -> Endpoint | None:
        """The endpoint of one attachment, if any."""
        for ep in self._by_id.values():
            if ep.key == (container_id, ifname):
                return ep
        return None

    # --- CNI operations --------------------------------------------------------------------

    async def create(self, req: EndpointRequest) -> Endpoint:
        """CNI ADD: allocate an address and plumb the pod's interface; all or nothing.

        An existing endpoint of the same (containerID, ifname) is replaced, as Cilium does
        (a runtime repeats ADD only after losing track of the first one).
        """
        key = (req.container_id, req.ifname)
        owner = owner_of(*key)
        async with self._serialized(key):
            self._in_flight.add(owner)
            try:
                # a DEL's veth still going away would clash on its names
                await self.unplumbed(req.netns, host_ifname(*key))
                old = self.find(*key)
                if old is not None:
                    log.info("ADD replaces endpoint %d of %s", old.id, owner)
                    await self._remove(old)
                    await self.unplumbed(host_ifname=old.host_ifname)
                return await self._create(req)
            finally:
                self._in_flight.discard(owner)

    async def _create(self, req: EndpointRequest) -> Endpoint:
        step = self._params.on_step or _ignore_step
        ep = Endpoint(
            id=self._ids.allocate(),
            container_id=req.container_id,
            ifname=req.ifname,
            netns=req.netns,
            host_ifname=host_ifname(req.container_id, req.ifname),
            state="creating",
            created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            mtu=req.mtu or self._params.mtu,
            pod_name=req.pod_name,
            pod_namespace=req.pod_namespace,
        )
        self._by_id[ep.id] = ep
        try:
            self._states.save(ep)  # write-ahead: a crash from here on is rolled back at start
            step("state-written")
            alloc = self._ipam.allocate(ep.owner)
            ep = replace(ep, ipv4=str(alloc.ip), gateway=str(self._ipam.router_ip))
            self._by_id[ep.id] = ep
            step("ip-allocated")
            await self._before_plumb(ep)
            done = await plumbing.plumb(self._nl, ep, req.mac, step)
            ep = replace(
                ep,
                mac=done.mac,
                host_ifindex=done.host_ifindex,
                host_mac=done.host_mac,
                source_table=done.source_table,
            )
            self._by_id[ep.id] = ep
            await self._dp.update(plumbing.datapath_row(ep))
            step("datapath-configured")
            await plumbing.route(self._nl, ep, step)
            ep = replace(ep, state="ready")
            self._states.save(ep)
            self._by_id[ep.id] = ep
            step("ready")
        except BaseException:
            try:
                await asyncio.shield(self._rollback(ep))
            except Exception:
                # the state file stays `creating`: the next start retries the roll-back
                log.exception("roll-back of endpoint %d (%s) failed", ep.id, ep.owner)
            raise
        log.info("endpoint %d ready: %s %s on %s", ep.id, ep.owner, ep.ipv4, ep.host_ifname)
        return ep

    async def delete(self, endpoint_id: int) -> Endpoint:
        """DEL by id; raises EndpointNotFound."""
        ep = self.get(endpoint_id)
        async with self._serialized(ep.key):
            current = self._by_id.get(endpoint_id)
            if current is None:
                return ep  # deleted meanwhile
            await self._remove(current)
            return current

    async def delete_attachment(self, container_id: str, ifname: str) -> Endpoint | None:
        """CNI DEL by (containerID, ifname): idempotent, needs no pod namespace.

        Also releases any address the owner still holds without an endpoint."""
        key = (container_id, ifname)
        async with self._serialized(key):
            ep = self.find(*key)
            if ep is not None:
                await self._remove(ep)
            else:
                self._ipam.release_owner(owner_of(*key))
            return ep

    async def check(self, endpoint_id: int, netns: str | None = None) -> Endpoint:
        """CNI CHECK: raise CheckFailed naming whatever is missing."""
        ep = self.get(endpoint_id)
        async with self._serialized(ep.key):
            problems: list[str] = []
            if netns and netns != ep.netns:
                problems.append(f"endpoint {ep.id} is in {ep.netns}, not {netns}")
            if ep.state != "ready":
                problems.append(f"endpoint {ep.id} is {ep.state}, not ready")
            alloc = self._ipam.get(ep.ipv4) if ep.ipv4 else None
            if alloc is None or alloc.owner != ep.owner:
                problems.append(f"IPAM holds no reservation of {ep.ipv4} for {ep.owner}")
            problems += await plumbing.verify(self._nl, ep)
            if ep.state == "ready":
                problems += await self._dp.verify(plumbing.datapath_row(ep))
            if problems:
                raise CheckFailed(problems)
            return ep

    async def gc(self, valid: set[Key]) -> list[Endpoint]:
        """CNI GC: delete every ready endpoint whose attachment is not in `valid`, then
        release addresses without an endpoint."""
        removed: list[Endpoint] = []
        for ep in self.endpoints():
            if ep.key in valid or ep.state != "ready" or ep.owner in self._in_flight:
                continue
            gone = await self.delete_attachment(*ep.key)
            if gone is not None:
                removed.append(gone)
        self._ipam.gc(self._live_owners(), grace=self._params.ipam_gc_grace)
        return removed

    # --- internals -------------------------------------------------------------------------

    async def _remove(self, ep: Endpoint) -> None:
        """Delete an endpoint: mark it, delete the host route, detach the datapath, release
        its address, forget it; then delete the veth pair in the background (see the module
        docstring)."""
        ep = replace(ep, state="deleting")
        self._states.save(ep)
        self._by_id[ep.id] = ep
        # The route first, so the address may go to the next ADD at once. Before the datapath:
        # dropping the tcx links' pins makes the kernel detach them in the background, holding
        # the RTNL lock through two RCU grace periods (~25 ms) that any netlink call would wait
        # out. (Setting the veth down instead of deleting the route costs a grace period too.)
        await self._nl.node.delete_route(plumbing.host_route(ep))
        await self._dp.delete(plumbing.datapath_row(ep))
        self._ipam.release_owner(ep.owner)
        self._forget(ep)
        task = asyncio.create_task(self._unplumb(ep), name=f"unplumb:{ep.host_ifname}")
        self._unplumbing[ep.host_ifname] = (ep.netns, task)
        log.info("endpoint %d deleted: %s %s", ep.id, ep.owner, ep.ipv4)

    async def _unplumb(self, ep: Endpoint) -> None:
        try:
            await plumbing.unplumb(self._nl, ep)
        except Exception:
            # the next start deletes interfaces no endpoint owns
            log.exception("deleting %s of endpoint %d failed", ep.host_ifname, ep.id)
        finally:
            del self._unplumbing[ep.host_ifname]

    async def _before_plumb(self, ep: Endpoint) -> None:
        """Await the `before_plumb` hook, logging a wait that shows ADD was held up."""
        if self._params.before_plumb is None:
            return
        started = time.monotonic()
        await self._params.before_plumb(ep)
        waited = time.monotonic() - started
        if waited >= BEFORE_PLUMB_LOGGED_S:
            log.info("endpoint %d (%s): ADD waited %.2f s before plumbing", ep.id, ep.owner, waited)

    async def _rollback(self, ep: Endpoint) -> None:
        """Undo a partial ADD; each step is idempotent, so a repeat after a crash is safe."""
        await self._dp.delete(plumbing.datapath_row(ep))
        await plumbing.unplumb(self._nl, ep)
        self._ipam.release_owner(ep.owner)
        self._forget(ep)

    def _forget(self, ep: Endpoint) -> None:
        self._states.remove(ep.id)
        self._by_id.pop(ep.id, None)
        self._ids.release(ep.id)

    def _live_owners(self) -> set[str]:
        return {ep.owner for ep in self._by_id.values()} | self._in_flight

    async def _delete_orphan_links(self) -> None:
        """Delete host-side veths (`lxc*`) that no endpoint owns: what a crash left behind."""
        owned = {ep.host_ifname for ep in self._by_id.values()}
        for link in await self._nl.node.links():
            if link.name.startswith(HOST_IFNAME_PREFIX) and link.name not in owned:
                log.warning("deleting orphan interface %s", link.name)
                await self._nl.node.delete_link(link.name)

    async def _reconcile_datapath(self) -> None:
        """Make the datapath match the ready endpoints: prune what none owns (left by a crash
        or a DEL while the agent was down), then update each one; a restarted agent re-opens
        its pinned links here and swaps the newly loaded programs in."""
        rows = [plumbing.datapath_row(ep) for ep in self._by_id.values() if ep.state == "ready"]
        try:
            await self._dp.prune(rows)
        except Exception:
            log.exception("pruning the datapath failed")
        for row in rows:
            try:
                await self._dp.update(row)
            except Exception:
                # CHECK reports it; DEL or a repeated ADD repairs it
                log.exception("datapath of endpoint %d (%s) failed", row.id, row.host_ifname)

    async def _drain_delete_queue(self) -> None:
        """Replay CNI DELs that the plugin queued while the agent was down."""
        queue = self._params.delete_queue_dir
        for path in sorted(queue.glob("*.json")) if queue.is_dir() else []:
            try:
                entry = json.loads(path.read_text())
                container_id, ifname = str(entry["containerID"]), str(entry["ifname"])
            except (ValueError, KeyError, TypeError) as err:
                log.error("dropping unreadable queued DEL %s: %s", path, err)
            else:
                log.info("replaying queued DEL of %s/%s", container_id, ifname)
                await self.delete_attachment(container_id, ifname)
            path.unlink(missing_ok=True)

    async def _gc_loop(self) -> None:
        while True:
            await asyncio.sleep(self._params.ipam_gc_interval)
            try:
                self._ipam.gc(self._live_owners(), grace=self._params.ipam_gc_grace)
            except OSError:
                # the state file could not be written (disk full?): keep serving, retry later
                log.exception("IPAM garbage collection failed")

    @asynccontextmanager
    async def _serialized(self, key: Key) -> AsyncIterator[None]:
        """Hold the lock of one attachment; locks are dropped when nobody waits on them."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._lock_users[key] = self._lock_users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._lock_users[key] -= 1
            if self._lock_users[key] == 0:
                del self._lock_users[key]
                del self._locks[key]


def _ignore_step(step: str) -> None:
    """The step hook when none is configured."""
