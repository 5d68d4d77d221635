"""The policy component: keeps a Repository in step with the store.

Reflectors on Namespaces, Pods and the three policy kinds feed the repository, which updates
its selector cache one identity at a time and tells its subscribers which endpoints' policies
changed (the datapath's policy-map reconciler job subscribes). Events are applied in arrival
order on the event loop; namespaces are listed before pods so first identities are complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pylium.api import ApiError, validate
from pylium.policy.repository import Repository
from pylium.policy.rules import KINDS
from pylium.store import Event, Store
from pylium.store.reflector import Reflector

log = logging.getLogger(__name__)

WATCHED = ("Namespace", "Pod", *KINDS)


class PolicyWatcher:
    """Mirror the store's namespaces, pods and policies into `repo`.

    Args:
        store: the cluster store.
        repo: the repository to feed.
    """

    def __init__(self, store: Store, repo: Repository) -> None:
        self.repo = repo
        self._reflectors = [Reflector(store, kind) for kind in WATCHED]
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start mirroring; returns once every kind's first list is applied, in order."""
        for reflector in self._reflectors:
            self._tasks.append(asyncio.create_task(reflector.run(self._on_event)))
            synced = asyncio.create_task(reflector.wait_synced())
            await asyncio.wait({self._tasks[-1], synced}, return_when=asyncio.FIRST_COMPLETED)
            if not synced.done():
                synced.cancel()
                await self._tasks[-1]  # raises why the reflector ended

    async def stop(self) -> None:
        """Stop mirroring; returns once every reflector task has ended."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def _on_event(self, event: Event) -> None:
        obj = event.object
        kind, meta = obj["kind"], obj["metadata"]
        namespace = meta.get("namespace") or ""
        if event.type == "DELETED":
            if kind == "Namespace":
                self.repo.delete_namespace(meta["name"])
            elif kind == "Pod":
                self.repo.delete_pod(namespace, meta["name"])
            else:
                ns = "" if kind == "CiliumClusterwideNetworkPolicy" else namespace
                self.repo.delete_policy(kind, ns, meta["name"])
            return
        if kind == "Namespace":
            self.repo.set_namespace(obj)
        elif kind == "Pod":
            self.repo.set_pod(obj)
        else:
            try:  # the store validates on write; a stale schema must not stop the component
                self.repo.set_policy(validate(obj))
            except ApiError as exc:
                log.warning("ignoring invalid %s %s/%s: %s", kind, namespace, meta["name"], exc)
