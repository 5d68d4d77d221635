"""Pod sandboxes of the lab kubelet: a pod's network namespace, its CNI attachment and its
processes, with the state that lets a restarted kubelet adopt or clean them.

A sandbox is made in this order (and unmade in reverse): namespace (`lo` up), CNI ADD through
the node's conflist, processes started in the namespace and the node's cgroup. Its state file
(`<node dir>/kubelet/pods/<namespace>_<name>/state.json`) is written as soon as the namespace
exists, so nothing a crash leaves behind goes unrecorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pylium import statefile
from pylium.lab import cgroup, netns, process, record
from pylium.lab.cnichain import CniChain, Runtime
from pylium.lab.record import NodeRecord, kubelet_dir
from pylium.store import Object

IFNAME = "eth0"
log = logging.getLogger(__name__)

RESTART_BACKOFF_CAP = 60.0
"""Longest wait, in seconds, before restarting a container that keeps exiting."""
NETNS_ANNOTATION = "pylium.io/netns"
"""Pod annotation naming the pod's namespace, for `pylium exec` and `pylium probe`."""


def container_id(uid: str) -> str:
    """The sandbox container ID CNI sees, derived from the pod's uid (a new pod, a new ID)."""
    return hashlib.sha256(uid.encode()).hexdigest()


def container_argv(pod: Object, container: dict[str, Any]) -> list[str]:
    """What a container runs: its command + args, else the built-in server on its ports."""
    command = list(container.get("command") or []) + list(container.get("args") or [])
    if command:
        return command
    argv = [sys.executable, "-m", "pylium.lab.podserver", "--name", pod["metadata"]["name"]]
    for port in container.get("ports") or []:
        proto = str(port.get("protocol", "TCP")).lower()
        if proto in ("tcp", "udp"):
            argv += [f"--{proto}", str(port["containerPort"])]
    return argv


@dataclass
class SandboxState:
    """What the kubelet made for one pod."""

    namespace: str
    name: str
    uid: str
    netns: str
    containerID: str
    ip: str | None = None
    gateway: str | None = None
    pids: dict[str, int] = field(default_factory=dict)
    """container name -> pid of its (last) process."""
    restarts: dict[str, int] = field(default_factory=dict)
    """container name -> times restarted."""
    lastExit: dict[str, int] = field(default_factory=dict)
    """container name -> exit code of its last process, when the kubelet could reap it (an
    adopted process is not its child: its exit code is unknown)."""
    notBefore: dict[str, float] = field(default_factory=dict)
    """container name -> wall-clock time before which it is not restarted (backoff)."""
    exited: dict[str, int | None] = field(default_factory=dict)
    """Containers that ended for good (restartPolicy), with their exit code if known."""

    @property
    def key(self) -> str:
        """`namespace/name`."""
        return f"{self.namespace}/{self.name}"


class Sandboxes:
    """The sandboxes of one node."""

    def __init__(self, lab: str, node: NodeRecord, chain: CniChain) -> None:
        self.lab = lab
        self.node = node
        self.chain = chain
        self.pods_dir = kubelet_dir(node.name) / "pods"
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        """Processes this kubelet started, by pid: their handles give their exit codes."""

    def _dir(self, namespace: str, name: str) -> Path:
        return self.pods_dir / f"{namespace}_{name}"

    def load_all(self) -> list[SandboxState]:
        """Every sandbox recorded on disk."""
        states = []
        for state_file in sorted(self.pods_dir.glob("*/state.json")):
            states.append(SandboxState(**statefile.read_json(state_file)))
        return states

    def _save(self, state: SandboxState) -> None:
        statefile.write_json(self._dir(state.namespace, state.name) / "state.json", asdict(state))

    def _runtime(self, state: SandboxState, pod: Object | None = None) -> Runtime:
        args = [
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAMESPACE", state.namespace),
            ("K8S_POD_NAME", state.name),
            ("K8S_POD_INFRA_CONTAINER_ID", state.containerID),
            ("K8S_POD_UID", state.uid),
        ]
        mappings = []
        for c in (pod or {}).get("spec", {}).get("containers", []):
            for p in c.get("ports") or []:
                if p.get("hostPort"):
                    mappings.append(
                        {
                            "hostPort": p["hostPort"],
                            "containerPort": p["containerPort"],
                            "protocol": str(p.get("protocol", "TCP")).lower(),
                        }
                    )
        return Runtime(
            container_id=state.containerID,
            netns=str(netns.netns_path(state.netns)),
            ifname=IFNAME,
            args=args,
            capability_args={"portMappings": mappings},
        )

    def collect(self, state: SandboxState) -> None:
        """Reap the pod's exited processes and remember their exit codes."""
        for cname, pid in state.pids.items():
            child = self._children.get(pid)
            if child is not None and child.poll() is not None:
                state.lastExit[cname] = child.returncode
                del self._children[pid]

    def alive(self, state: SandboxState) -> dict[str, bool]:
        """container name -> whether its process runs inside the pod's namespace."""
        return {c: _in_netns(pid, state.netns) for c, pid in state.pids.items()}

    def down(self, state: SandboxState) -> bool:
        """Whether a container that has not ended for good is not running."""
        return any(not up and c not in state.exited for c, up in self.alive(state).items())

    async def create(self, pod: Object) -> SandboxState:
        """Namespace, CNI ADD, processes; on failure all of it is rolled back (CNI DEL
        included) and the error raised."""
        meta = pod["metadata"]
        state = SandboxState(
            namespace=meta.get("namespace", "default"),
            name=meta["name"],
            uid=meta["uid"],
            netns=record.pod_netns(self.lab, meta.get("namespace", "default"), meta["name"]),
            containerID=container_id(meta["uid"]),
        )
        netns.delete(state.netns)  # a leftover of an earlier pod of the same name
        netns.create(state.netns)
        try:
            self._save(state)
            result = await self.chain.add(self._runtime(state, pod))
            state.ip, state.gateway = _first_ipv4(result)
            self._save(state)
            self.start_processes(state, pod)
        except BaseException:
            try:
                await self.destroy(state)
            except Exception as e:  # keep the ADD error; the state file lets a later sync
                # (or `lab down`) finish the clean-up
                log.warning("rolling back the sandbox of %s failed: %s", state.key, e)
            raise
        return state

    def start_processes(self, state: SandboxState, pod: Object) -> None:
        """Start each container that is not running, in the pod's namespace and node cgroup.

        A container that ran before is restarted as the pod's restartPolicy says (Always,
        the default; OnFailure: unless it exited 0; Never), else it has ended for good; one
        that keeps exiting waits out a growing backoff first.
        """
        policy = pod["spec"].get("restartPolicy") or "Always"
        cg = Path(self.node.cgroup)
        for container in pod["spec"]["containers"]:
            cname = container["name"]
            if cname in state.exited or _in_netns(state.pids.get(cname), state.netns):
                continue
            if time.time() < state.notBefore.get(cname, 0.0):
                continue  # crash-looping: wait out the backoff
            if cname in state.pids:
                code = state.lastExit.pop(cname, None)
                if policy == "Never" or (policy == "OnFailure" and code == 0):
                    state.exited[cname] = code
                    continue
                state.restarts[cname] = state.restarts.get(cname, 0) + 1
                # A process that dies sooner than this is not restarted before it (kubelet's
                # CrashLoopBackOff); one that ran longer restarts at once.
                backoff = min(RESTART_BACKOFF_CAP, 2.0 ** (state.restarts[cname] - 1))
                state.notBefore[cname] = time.time() + backoff
                log.info(
                    "restarting %s of %s (restart %d)", cname, state.key, state.restarts[cname]
                )
            argv = netns.nsenter_argv(state.netns, container_argv(pod, container))
            log_file = self._dir(state.namespace, state.name) / f"{cname}.log"

            def join_cgroup() -> None:
                cgroup.add_pid(cg, os.getpid())

            child = process.start(argv, log_file, preexec=join_cgroup)
            self._children[child.pid] = child
            state.pids[cname] = child.pid
        self._save(state)

    async def destroy(self, state: SandboxState) -> None:
        """Stop the processes, CNI DEL, delete the namespace, forget the state."""
        for pid in state.pids.values():
            if _in_netns(pid, state.netns):
                # In a thread: a slow SIGTERM must not stall the kubelet's other pods.
                await asyncio.to_thread(process.stop, pid)
            child = self._children.pop(pid, None)
            if child is not None:
                child.poll()  # collect it: no zombie left behind
        # DEL runs even when the namespace is gone: the agent still holds the address.
        await self.chain.delete(self._runtime(state))
        netns.delete(state.netns)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self._dir(state.namespace, state.name))


def _in_netns(pid: int | None, name: str) -> bool:
    """Whether `pid` lives in the named namespace (a reused pid elsewhere does not count)."""
    if not pid:
        return False
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(netns.netns_path(name)).st_ino
    except (FileNotFoundError, ProcessLookupError):
        return False


def _first_ipv4(result: dict[str, Any]) -> tuple[str | None, str | None]:
    """(address, gateway) of the first IPv4 entry of a CNI result."""
    for entry in result.get("ips", []):
        address = str(entry.get("address", ""))
        if "." in address:
            return address.split("/")[0], entry.get("gateway")
    return None, None
