"""The NetworkPolicy truth-table cases (`cases.yaml`) through a lab's datapath.

`Harness.setup()` deploys the file's model: namespaces x, y, z; pods a, b, c in each, spread
over the lab's nodes, serving 80 and 81 on TCP and UDP; one ClusterIP Service s-<ns>-<pod> per
pod. `run_case()` then applies a case's policies, runs its steps (policy, label, pod and
namespace changes) and after each probes every ordered pod pair on every (port, protocol) of the
step, through pod IPs or the Services' ClusterIPs (`via`). A cell that disagrees with the table
is probed again until it agrees or the convergence window ends (upstream polls each pair for
10 s). Every cell is also traced with `pylium policy trace`'s code over the store's objects: a
trace that disagrees with the table fails the case too. After a case the model is restored
(policies deleted, labels reset, added pods and namespaces deleted).

SCTP probes are left out when the kernel has no SCTP (`sctp_missing()` says why); policies that
name SCTP are still applied, so they still isolate.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pylium.api import validate
from pylium.cli.policy import _repository
from pylium.lab.conformance.cases import NAME_LABEL, substitute
from pylium.lab.conformance.prober import Prober, Request
from pylium.lab.record import LabRecord
from pylium.lab.sandbox import NETNS_ANNOTATION
from pylium.loadbalancer.serviceipam import admit, forget
from pylium.policy import trace
from pylium.store import Conflict, NotFound, Object, Store

Via = Literal["pod", "service"]
POD_TIMEOUT = 90.0
"""Seconds a created pod may take to run (pods start one by one on a loaded machine)."""
IMAGE = "pylium/podserver"


def sctp_missing() -> str | None:
    """Why SCTP probes cannot run here, or None when the kernel has SCTP."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
    except OSError as e:
        return f"SCTP probes skipped: the kernel has no SCTP ({e.strerror})"
    return None


@dataclass(frozen=True)
class Cell:
    """One probe of a step's matrix and what the table wants."""

    src: str
    dst: str
    port: int
    protocol: str
    want: bool


@dataclass
class CaseResult:
    """One case's outcome: `wrong` lists every cell that disagreed, by step."""

    id: str
    name: str
    seconds: float
    probes: int = 0
    wrong: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every cell of every step agreed, in the datapath and in the trace."""
        return not self.wrong

    def to_json(self) -> dict[str, Any]:
        """The stable `-o json` form."""
        return {
            "id": self.id,
            "name": self.name,
            "passed": self.passed,
            "seconds": round(self.seconds, 2),
            "probes": self.probes,
            "wrong": self.wrong,
        }


def _verdict(ok: bool) -> str:
    return "allowed" if ok else "blocked"


class Harness:
    """The model deployed in one lab, and the cases run against it one after the other."""

    def __init__(
        self,
        lab: LabRecord,
        store: Store,
        model: dict[str, Any],
        via: Via = "pod",
        converge: float = 10.0,
        timeout: float = 0.8,
    ) -> None:
        self.lab, self.store, self.model = lab, store, model
        self.via, self.converge, self.timeout = via, converge, timeout
        self.protocols = [
            p for p in model["serve"]["protocols"] if p != "SCTP" or not sctp_missing()
        ]
        self.pods: dict[str, Object] = {}
        """Pod key -> the running pod, for every pod the current step has."""
        self.cluster_ips: dict[str, str] = {}
        self.namespaces: dict[str, dict[str, str]] = {}
        """Namespace -> labels, as last written."""
        self.labels: dict[str, dict[str, str]] = {}
        """Pod key -> labels, as last written."""
        self._probers = {node.name: Prober(Path(node.cgroup)) for node in lab.nodes}
        self._next_id = 0

    def close(self) -> None:
        """Stop the probers."""
        for prober in self._probers.values():
            prober.close()

    # -- the model ---------------------------------------------------------------------------

    async def setup(self, created: set[str]) -> None:
        """Deploy the model, after removing what an earlier run may have left: `created` names
        the namespaces the cases create."""
        for ns in created:
            await self._delete_namespace(ns)
        for ns in self.model["namespaces"]:
            pods, _ = await self.store.list("Pod", ns)
            for pod in pods:
                key = f"{ns}/{pod['metadata']['name']}"
                if key not in self.model["pods"]:
                    await self._delete_pod(key)
        await self.reset()

    async def reset(self) -> None:
        """Back to the model: no policies, the model's labels, no added pods or namespaces."""
        await self._delete_policies()
        for ns in [n for n in self.namespaces if n not in self.model["namespaces"]]:
            await self._delete_namespace(ns)
        for key in [k for k in self.pods if k not in self.model["pods"]]:
            await self._delete_pod(key)
        for ns, spec in self.model["namespaces"].items():
            await self._set_namespace(ns, spec.get("labels") or {})
        for key, spec in self.model["pods"].items():
            await self._set_pod(key, spec.get("labels") or {})
        await self._wait_running()

    def _node_for(self, key: str) -> str:
        order = sorted(self.model["pods"])
        index = order.index(key) if key in order else len(order) + len(self.pods)
        return self.lab.nodes[index % len(self.lab.nodes)].name

    def _pod(self, key: str, labels: dict[str, str]) -> Object:
        ns, name = key.split("/")
        ports = [
            {"containerPort": port, "protocol": proto, "name": f"serve-{port}-{proto.lower()}"}
            for port in self.model["serve"]["ports"]
            for proto in ("TCP", "UDP")
        ]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "nodeName": self._node_for(key),
                "containers": [{"name": "serve", "image": IMAGE, "ports": ports}],
            },
        }

    def _service(self, key: str) -> Object:
        ns, name = key.split("/")
        ports = [
            {"name": f"serve-{port}-{proto.lower()}", "port": port, "protocol": proto}
            for port in self.model["serve"]["ports"]
            for proto in ("TCP", "UDP")
        ]
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"s-{ns}-{name}", "namespace": ns},
            "spec": {"selector": {"pod": name}, "ports": ports},
        }

    async def _relabel(self, kind: str, ns: str, name: str, labels: dict[str, str]) -> None:
        while True:
            obj = await self.store.get(kind, ns, name)
            if (obj["metadata"].get("labels") or {}) == labels:
                return
            obj["metadata"]["labels"] = labels
            try:
                await self.store.update(obj)
                return
            except Conflict:
                continue  # the kubelet wrote the status meanwhile

    async def _set_namespace(self, ns: str, labels: dict[str, str]) -> None:
        labels = {**labels, NAME_LABEL: ns}
        if self.namespaces.get(ns) == labels:
            return
        try:
            await self._relabel("Namespace", "", ns, labels)
        except NotFound:
            meta = {"name": ns, "labels": labels}
            obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}
            await self.store.apply(validate(obj))
        self.namespaces[ns] = labels

    async def _set_pod(self, key: str, labels: dict[str, str]) -> None:
        if self.labels.get(key) == labels and key in self.pods:
            return
        ns, name = key.split("/")
        try:
            await self._relabel("Pod", ns, name, labels)
        except NotFound:
            await self.store.apply(validate(self._pod(key, labels)))
        svc = self._service(key)
        try:
            found = await self.store.get("Service", ns, svc["metadata"]["name"])
        except NotFound:
            found = await self.store.create(await admit(self.store, validate(svc)))
        self.cluster_ips[key] = str(found["spec"]["clusterIP"])
        self.labels[key] = labels
        self.pods.setdefault(key, {})

    async def _wait_running(self) -> None:
        """Until every pod of the step runs, ready, with an IP and a namespace."""
        deadline = time.monotonic() + POD_TIMEOUT
        while True:
            waiting = []
            for key in self.pods:
                ns, name = key.split("/")
                try:
                    pod = await self.store.get("Pod", ns, name)
                except NotFound:
                    pod = {}
                status = pod.get("status") or {}
                ready = all(c.get("ready") for c in status.get("containerStatuses") or [{}])
                annotations = pod.get("metadata", {}).get("annotations") or {}
                running = status.get("phase") == "Running" and status.get("podIP") and ready
                if running and annotations.get(NETNS_ANNOTATION):
                    self.pods[key] = pod
                    continue
                waiting.append(key)
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"pods not running after {POD_TIMEOUT:.0f} s: {waiting}")
            await asyncio.sleep(0.1)

    async def _delete(self, kind: str, ns: str, name: str) -> None:
        try:
            await self.store.delete(kind, ns, name)
        except NotFound:
            return
        await forget(self.store, kind, ns, name)

    async def _delete_pod(self, key: str) -> None:
        ns, name = key.split("/")
        await self._delete("Pod", ns, name)
        await self._delete("Service", ns, f"s-{ns}-{name}")
        self.pods.pop(key, None)
        self.labels.pop(key, None)
        self.cluster_ips.pop(key, None)

    async def _delete_namespace(self, ns: str) -> None:
        pods, _ = await self.store.list("Pod", ns)
        for pod in pods:
            await self._delete_pod(f"{ns}/{pod['metadata']['name']}")
        for key in [k for k in self.pods if k.startswith(f"{ns}/")]:
            await self._delete_pod(key)
        for policy in (await self.store.list("NetworkPolicy", ns))[0]:
            await self._delete("NetworkPolicy", ns, policy["metadata"]["name"])
        await self._delete("Namespace", "", ns)
        self.namespaces.pop(ns, None)

    async def _delete_policies(self) -> None:
        for policy in (await self.store.list("NetworkPolicy", None))[0]:
            meta = policy["metadata"]
            if (
                meta["namespace"] in self.namespaces
                or meta["namespace"] in self.model["namespaces"]
            ):
                await self._delete("NetworkPolicy", meta["namespace"], meta["name"])

    # -- a case ------------------------------------------------------------------------------

    async def apply(self, action: dict[str, Any]) -> None:
        """One step action of the case file, as the API server would see it."""
        ((verb, arg),) = action.items()
        if verb in ("create_policy", "update_policy"):
            ips = {k: str(p["status"]["podIP"]) for k, p in self.pods.items()}
            await self.store.apply(validate(substitute(arg, ips)))
        elif verb == "delete_policy":
            await self._delete("NetworkPolicy", arg["namespace"], arg["name"])
        elif verb == "delete_all_policies":
            await self._delete_policies()
        elif verb in ("set_namespace_labels", "create_namespace"):
            await self._set_namespace(arg.get("namespace") or arg["name"], arg.get("labels") or {})
        elif verb == "delete_namespace":
            await self._delete_namespace(arg["name"])
        elif verb in ("set_pod_labels", "create_pod"):
            await self._set_pod(arg["pod"], arg.get("labels") or {})
        elif verb == "delete_pod":
            await self._delete_pod(arg["pod"])
        else:
            raise ValueError(f"unknown action {verb}")

    async def run_case(self, case: dict[str, Any]) -> CaseResult:
        """Run one case from the model and restore the model after."""
        start = time.monotonic()
        result = CaseResult(case["id"], case["name"], 0.0)
        steps = [{"description": "initial", "actions": [], "probes": case["probes"]}]
        steps += case.get("steps") or []
        try:
            for policy in case.get("policies") or []:
                await self.apply({"create_policy": policy})
            for i, step in enumerate(steps):
                for action in step["actions"]:
                    await self.apply(action)
                await self._wait_running()
                label = "initial" if i == 0 else f"step {i} ({step.get('description', '')})"
                cells = matrix(step["probes"], self.protocols)
                result.probes += len(cells)
                result.wrong += [f"{label}: {w}" for w in await self._check(cells)]
        finally:
            await self.reset()
        result.seconds = time.monotonic() - start
        return result

    async def _check(self, cells: list[Cell]) -> list[str]:
        """The cells whose datapath result or trace disagrees with the table, once every
        datapath cell agreed or the window ended."""
        repo = await _repository(self.store, "default", False)
        traced = {c: trace(repo, c.src, c.dst, c.port, c.protocol).allowed for c in cells}
        got: dict[Cell, tuple[bool, str | None]] = {}
        pending = cells
        deadline = time.monotonic() + self.converge
        while pending:
            got.update(await asyncio.to_thread(self._probe, pending))
            pending = [c for c in pending if got[c][0] != c.want]
            if time.monotonic() > deadline:
                break
        wrong = []
        for c in cells:
            ok, reason = got[c]
            if ok == c.want and traced[c] == c.want:
                continue
            what = "trace disagrees" if ok == c.want else f"datapath {_verdict(ok)}"
            why = f" ({reason})" if reason and not ok else ""
            wrong.append(
                f"{c.src} -> {c.dst} {c.port}/{c.protocol}: want {_verdict(c.want)}, {what}{why},"
                f" trace {_verdict(traced[c])}"
            )
        return wrong

    def _probe(self, cells: list[Cell]) -> dict[Cell, tuple[bool, str | None]]:
        """Every cell at once, each from its source pod's node prober."""
        ids: dict[int, Cell] = {}
        batches: dict[str, list[Request]] = {}
        for c in cells:
            pod = self.pods[c.src]
            if self.via == "service":
                dest = self.cluster_ips[c.dst]
            else:
                dest = str(self.pods[c.dst]["status"]["podIP"])
            self._next_id += 1
            ids[self._next_id] = c
            batches.setdefault(pod["spec"]["nodeName"], []).append(
                Request(
                    self._next_id,
                    pod["metadata"]["annotations"][NETNS_ANNOTATION],
                    dest,
                    c.port,
                    c.protocol,
                    self.timeout,
                )
            )
        for node, batch in batches.items():
            self._probers[node].send(batch)
        out = {}
        for node in batches:
            out.update({ids[i]: answer for i, answer in self._probers[node].collect().items()})
        return out


def matrix(probes: list[dict[str, Any]], protocols: list[str]) -> list[Cell]:
    """The cells of a step's probes on the protocols that can run: every ordered pair of the
    expected table but loopback, wanted allowed iff the table lists the destination."""
    return [
        Cell(src, dst, probe["port"], probe["protocol"], dst in allowed)
        for probe in probes
        if probe["protocol"] in protocols
        for src, allowed in probe["expected"].items()
        for dst in probe["expected"]
        if dst != src
    ]


def created_namespaces(cases: list[dict[str, Any]]) -> set[str]:
    """The namespaces the cases' steps create."""
    return {
        action["create_namespace"]["name"]
        for case in cases
        for step in case.get("steps") or []
        for action in step["actions"]
        if "create_namespace" in action
    }


@contextmanager
def harness(
    lab: LabRecord, store: Store, model: dict[str, Any], via: Via, converge: float
) -> Iterator[Harness]:
    """A Harness whose probers stop on the way out."""
    h = Harness(lab, store, model, via, converge)
    try:
        yield h
    finally:
        h.close()
