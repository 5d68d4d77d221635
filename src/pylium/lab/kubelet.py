"""The lab kubelet: runs the Pods bound to one lab node, as a kubelet with a CNI runtime does.

It lists and watches Pods and syncs each pod bound to its node (`spec.nodeName`, set by the
user or by the lab scheduler; unbound pods are not its business) through a work queue: a pod
bound here gets a sandbox (namespace, CNI ADD, processes) and a Running status; a pod deleted
or bound elsewhere loses it (processes stopped, CNI DEL, namespace deleted). A
failed ADD is reported in the pod's status, rolled back with DEL and retried with backoff.

At start it reads back its sandboxes from the node directory: pods still wanted are adopted
(dead processes restarted), the others are cleaned up. SIGTERM ends it without touching any pod
(`pylium lab down` removes the namespaces itself). It reports its Node Ready while it runs
(NotReady once stopped), as a kubelet's node status does.

Run as `python -m pylium.lab.kubelet --lab LAB --node NODE` inside the node's namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pylium.lab import record
from pylium.lab.cnichain import CniChain, load_conflist
from pylium.lab.sandbox import NETNS_ANNOTATION, Sandboxes, SandboxState
from pylium.lab.workqueue import WorkQueue
from pylium.store import Conflict, NotFound, Object, Store, open_store
from pylium.store.reflector import Reflector

log = logging.getLogger("pylium.lab.kubelet")

WORKERS = 4
"""Pods synced at once."""

LIVENESS_INTERVAL = 1.0
"""Seconds between checks that every pod's processes still run (dead ones are restarted)."""


def pod_key(pod: Object) -> str:
    """`namespace/name` of a pod."""
    meta = pod["metadata"]
    return f"{meta.get('namespace', 'default')}/{meta['name']}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def running_status(
    state: SandboxState, pod: Object, alive: dict[str, bool], host_ip: str | None
) -> dict[str, Any]:
    """The status of a pod whose sandbox is up: Running while a container may still run,
    then Succeeded (every container exited 0) or Failed. `host_ip` is the node's InternalIP."""
    old = pod.get("status") or {}
    containers = []
    for c in pod["spec"]["containers"]:
        name = c["name"]
        container: dict[str, Any] = {
            "name": name,
            "ready": alive.get(name, False),
            "restartCount": state.restarts.get(name, 0),
        }
        if name in state.exited:
            container["state"] = {"terminated": {"exitCode": state.exited[name]}}
        else:
            waiting = {"reason": "CrashLoopBackOff"} if name in state.restarts else {}
            container["state"] = {"running": {}} if container["ready"] else {"waiting": waiting}
        containers.append(container)
    ended = [state.exited[c["name"]] for c in containers if c["name"] in state.exited]
    if len(ended) < len(containers):
        phase = "Running"
    else:
        phase = "Succeeded" if all(code == 0 for code in ended) else "Failed"
    ready = all(c["ready"] for c in containers)
    return {
        "phase": phase,
        "podIP": state.ip,
        "podIPs": [{"ip": state.ip}] if state.ip else [],
        "hostIP": host_ip,
        "startTime": old.get("startTime") or _now(),
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True" if ready else "False"},
        ],
        "containerStatuses": containers,
    }


def failed_status(message: str) -> dict[str, Any]:
    """The status of a pod whose sandbox could not be made (it stays Pending and is retried)."""
    return {
        "phase": "Pending",
        "message": message,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "False", "reason": "SandboxFailed", "message": message},
        ],
    }


def _desire(pod: Object) -> str:
    """What a pod asks of a kubelet: its uid and spec (not its status or annotations)."""
    return json.dumps([pod["metadata"].get("uid"), pod.get("spec")], sort_keys=True)


class Kubelet:
    """Syncs the pods of one node."""

    def __init__(self, lab: record.LabRecord, node: record.NodeRecord, store: Store) -> None:
        self.lab = lab
        self.node = node
        self.store = store
        chain = CniChain(
            load_conflist(Path(node.cniConfDir)),
            [Path(node.cniBinDir)],
            record.kubelet_dir(node.name) / "cni-cache",
        )
        self.sandboxes = Sandboxes(lab.name, node, chain)
        self.pods = Reflector(store, "Pod")
        self._desires: dict[str, str] = {}
        """pod key -> `_desire` of the last event, to tell spec changes from status writes."""
        self.running: dict[str, SandboxState] = {}
        """Sandboxes this node holds, by pod key."""
        self._reported: dict[str, dict[str, bool]] = {}
        """pod key -> container liveness of the last status written: a process seen before
        its `nsenter` entered the pod namespace is reported not ready, and liveness requeues
        the pod once it is."""
        self.queue = WorkQueue()

    async def run(self) -> None:
        """Adopt what is on disk, then watch and sync until cancelled."""
        for state in self.sandboxes.load_all():
            self.running[state.key] = state
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watch())
            # Sync nothing before the first list: a pod missing from an empty cache would
            # look deleted and lose its sandbox.
            await self.pods.wait_synced()
            for key in self.running:
                self.queue.add(key)  # adopt, or clean up if the pod is gone
            tg.create_task(self._liveness())
            for _ in range(WORKERS):
                tg.create_task(self._worker())

    def _pod(self, key: str) -> Object | None:
        namespace, _, name = key.partition("/")
        return self.pods.get(namespace, name)

    async def _watch(self) -> None:
        """Queue every pod whose desired sandbox changed. Our own status writes change
        nothing to sync; skipping them keeps a failing pod on its backoff."""
        async for event in self.pods.events():
            key = pod_key(event.object)
            desire = None if event.type == "DELETED" else _desire(event.object)
            if self._desires.get(key) != desire or desire is None:
                self.queue.add(key)
            if desire is None:
                self._desires.pop(key, None)
            else:
                self._desires[key] = desire

    async def _liveness(self) -> None:
        """Collect exited processes and requeue their pods: the sync restarts them (by
        restartPolicy and backoff) and reports the change."""
        while True:
            await asyncio.sleep(LIVENESS_INTERVAL)
            for key, state in list(self.running.items()):
                self.sandboxes.collect(state)
                alive = self.sandboxes.alive(state)
                if self.sandboxes.down(state) or alive != self._reported.get(key):
                    self.queue.add(key)

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.sync(key)
                self.queue.forget(key)
            except Exception as e:
                delay = self.queue.retry(key)
                log.warning("sync %s failed (retry in %.1fs): %s", key, delay, e)
            finally:
                self.queue.done(key)

    async def sync(self, key: str) -> None:
        """Make the node hold exactly what the pod asks for."""
        pod = self._pod(key)
        wanted = pod is not None and pod["spec"].get("nodeName") == self.node.name
        state = self.running.get(key)
        if state is not None and (pod is None or not wanted or state.uid != pod["metadata"]["uid"]):
            log.info("removing sandbox of %s", key)
            await self.sandboxes.destroy(state)
            del self.running[key]
            self._reported.pop(key, None)
            state = None
        if pod is None or not wanted:
            return
        if state is None:
            state = await self._create(key, pod)
        elif self.sandboxes.down(state):
            self.sandboxes.start_processes(state, pod)
        alive = self.sandboxes.alive(state)
        status = running_status(state, pod, alive, self.node.underlayIP or None)
        await self._set_status(pod, status, state.netns)
        self._reported[key] = alive

    async def _create(self, key: str, pod: Object) -> SandboxState:
        log.info("creating sandbox of %s", key)
        try:
            state = await self.sandboxes.create(pod)
        except Exception as e:
            await self._set_status(pod, failed_status(str(e)), None)
            raise
        self.running[key] = state
        return state

    async def _set_status(self, pod: Object, status: dict[str, Any], netns: str | None) -> None:
        """Write status (and the netns annotation) unless already there; CAS, re-read on
        conflict."""
        meta = pod["metadata"]
        for _ in range(10):
            try:
                current = await self.store.get(
                    "Pod", meta.get("namespace", "default"), meta["name"]
                )
            except NotFound:
                return
            if current["metadata"].get("uid") != meta.get("uid"):
                return
            annotations = dict(current["metadata"].get("annotations") or {})
            if netns:
                annotations[NETNS_ANNOTATION] = netns
            else:
                annotations.pop(NETNS_ANNOTATION, None)
            if (
                current.get("status") == status
                and (current["metadata"].get("annotations") or {}) == annotations
            ):
                return
            updated = copy.deepcopy(current)
            updated["status"] = status
            updated["metadata"]["annotations"] = annotations
            try:
                await self.store.update(updated)
                return
            except Conflict:
                continue
        raise Conflict(f"pod {pod_key(pod)}: status kept changing")


async def run(lab_name: str, node_name: str) -> None:
    """Run the kubelet of one node until SIGTERM or SIGINT."""
    lab = record.load(lab_name)
    if lab is None:
        raise SystemExit(f"no lab {lab_name!r}")
    node = lab.node(node_name)
    store = open_store(lab.store)
    kubelet = Kubelet(lab, node, store)
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    log.info("kubelet of %s started", node_name)
    try:
        await set_node_ready(store, node_name, True, "KubeletReady", "lab kubelet is running")
        await kubelet.run()
    except asyncio.CancelledError:
        log.info("kubelet of %s stopping; pods keep running", node_name)
        await set_node_ready(store, node_name, False, "KubeletStopped", "lab kubelet stopped")
    finally:
        await store.close()


async def set_node_ready(store: Store, node: str, ready: bool, reason: str, message: str) -> None:
    """Set the Node's Ready condition (CAS, re-read on conflict); a missing Node is left alone."""
    condition = {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": _now(),
    }
    for _ in range(10):
        try:
            current = await store.get("Node", "", node)
        except NotFound:
            return
        updated = copy.deepcopy(current)
        status = updated.setdefault("status", {}) or {}
        others = [c for c in status.get("conditions") or [] if c.get("type") != "Ready"]
        status["conditions"] = [*others, condition]
        updated["status"] = status
        try:
            await store.update(updated)
            return
        except Conflict:
            continue
    raise Conflict(f"node {node}: status kept changing")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(prog="pylium.lab.kubelet", description=__doc__)
    parser.add_argument("--lab", required=True)
    parser.add_argument("--node", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    asyncio.run(run(args.lab, args.node))


if __name__ == "__main__":
    main()
