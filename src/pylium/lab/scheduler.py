"""The lab scheduler: binds each unscheduled Pod to the node running the fewest pods (ties go
to the first node in name order), one per lab, as kube-scheduler binds for kubelets.

A bind is a compare-and-swap on the pod's resourceVersion, so a pod changed meanwhile is
simply looked at again when its event arrives. Pods that name `spec.nodeName` themselves are
never touched. Binds made but not yet seen back through the watch count towards their node
(kube-scheduler's "assumed" pods), so a burst of pods spreads evenly.

Run as `python -m pylium.lab.scheduler --lab LAB` (the lab starts it in the root namespace: it
needs only the store).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import re
import signal
import sys

from pylium.lab import record
from pylium.store import Conflict, NotFound, Object, Store, open_store
from pylium.store.reflector import Reflector

log = logging.getLogger("pylium.lab.scheduler")

TERMINAL = ("Succeeded", "Failed")


def node_order(name: str) -> tuple[str, int]:
    """Sort key putting node2 before node10."""
    match = re.fullmatch(r"(.*?)(\d+)", name)
    return (match.group(1), int(match.group(2))) if match else (name, -1)


def pick_node(nodes: list[str], load: dict[str, int]) -> str | None:
    """The node with the fewest pods; ties by node order; None without nodes."""
    if not nodes:
        return None
    return min(sorted(nodes, key=node_order), key=lambda n: load.get(n, 0))


def _key(pod: Object) -> str:
    return f"{pod['metadata'].get('namespace', 'default')}/{pod['metadata']['name']}"


class Scheduler:
    """Binds the pending pods of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pods = Reflector(store, "Pod")
        self.nodes = Reflector(store, "Node")
        self._assumed: dict[str, str] = {}
        """pod key -> node we bound it to, until the watch shows the binding."""
        self._wake = asyncio.Event()

    def schedulable_nodes(self) -> list[str]:
        """Nodes pods may go to (not cordoned)."""
        return [
            n["metadata"]["name"]
            for n in self.nodes.items()
            if not (n.get("spec") or {}).get("unschedulable")
        ]

    def load(self) -> dict[str, int]:
        """Pods per node that still run or will (bound or assumed)."""
        counts: dict[str, int] = {}
        for pod in self.pods.items():
            node = pod.get("spec", {}).get("nodeName") or self._assumed.get(_key(pod))
            if node and (pod.get("status") or {}).get("phase") not in TERMINAL:
                counts[node] = counts.get(node, 0) + 1
        return counts

    async def run(self) -> None:
        """Watch pods and nodes, bind what is pending, until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.pods.run(self._changed))
            tg.create_task(self.nodes.run(self._changed))
            await self.pods.wait_synced()
            await self.nodes.wait_synced()
            while True:
                self._wake.clear()
                await self.schedule_pending()
                await self._wake.wait()

    def _changed(self, _event: object) -> None:
        self._wake.set()

    async def schedule_pending(self) -> None:
        """Bind every unscheduled pod not already assumed."""
        pods = self.pods.items()
        present = {_key(p) for p in pods}
        self._assumed = {k: n for k, n in self._assumed.items() if k in present}
        for pod in pods:
            key = _key(pod)
            if pod.get("spec", {}).get("nodeName"):
                self._assumed.pop(key, None)
                continue
            if key in self._assumed:
                continue
            node = pick_node(self.schedulable_nodes(), self.load())
            if node is None:
                return  # no node yet: a Node event wakes us
            await self._bind(pod, node)

    async def _bind(self, pod: Object, node: str) -> None:
        bound = copy.deepcopy(pod)
        bound["spec"]["nodeName"] = node
        try:
            await self.store.update(bound)
        except (Conflict, NotFound):
            return  # changed or deleted meanwhile: its event brings it back
        self._assumed[_key(pod)] = node
        log.info("bound %s to %s", _key(pod), node)


async def run(lab_name: str) -> None:
    """Run the lab's scheduler until SIGTERM or SIGINT."""
    lab = record.load(lab_name)
    if lab is None:
        raise SystemExit(f"no lab {lab_name!r}")
    store = open_store(lab.store)
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await Scheduler(store).run()
    except asyncio.CancelledError:
        log.info("scheduler of lab %s stopping", lab_name)
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(prog="pylium.lab.scheduler", description=__doc__)
    parser.add_argument("--lab", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    asyncio.run(run(args.lab))


if __name__ == "__main__":
    main()
