"""Reaching into a lab pod from a command: find its namespace and node cgroup, enter them,
and resolve pod names to pod IPs (for `pylium exec`, `pylium probe` and the demo)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from pylium.lab import cgroup, netns
from pylium.lab.record import LabRecord
from pylium.lab.sandbox import NETNS_ANNOTATION
from pylium.store import NotFound, Object, open_store


class PodAccessError(Exception):
    """The pod does not exist or has no sandbox yet (the message says which)."""


@dataclass(frozen=True)
class PodHandle:
    """Where a running pod lives."""

    namespace: str
    name: str
    netns: str
    cgroup: Path
    ip: str | None

    def enter(self) -> None:
        """Move this process into the pod's node cgroup and this thread into its namespace.

        For one-shot commands: the process stays there until it exits or execs.
        """
        cgroup.add_pid(self.cgroup, os.getpid())
        netns.enter(netns.netns_path(self.netns))


async def _get_pod(lab: LabRecord, namespace: str, name: str) -> Object:
    store = open_store(lab.store)
    try:
        return await store.get("Pod", namespace, name)
    except NotFound:
        raise PodAccessError(f'pod "{name}" not found in namespace "{namespace}"') from None
    finally:
        await store.close()


def find_pod(lab: LabRecord, namespace: str, name: str) -> PodHandle:
    """The running pod `namespace/name` of the lab."""
    pod = asyncio.run(_get_pod(lab, namespace, name))
    ns = (pod["metadata"].get("annotations") or {}).get(NETNS_ANNOTATION)
    node = pod.get("spec", {}).get("nodeName")
    if not ns or not node or not netns.exists(ns):
        phase = (pod.get("status") or {}).get("phase", "Pending")
        raise PodAccessError(f"pod {namespace}/{name} has no running sandbox (phase {phase})")
    return PodHandle(
        namespace=namespace,
        name=name,
        netns=ns,
        cgroup=Path(lab.node(node).cgroup),
        ip=(pod.get("status") or {}).get("podIP"),
    )


def resolve_destination(lab: LabRecord, namespace: str, dest: str) -> str:
    """An IP as is; `NS/POD` or `POD` (in `namespace`) as that pod's IP."""
    try:
        return str(ipaddress.ip_address(dest))
    except ValueError:
        pass
    pod_ns, _, pod_name = dest.rpartition("/")
    pod = asyncio.run(_get_pod(lab, pod_ns or namespace, pod_name))
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        raise PodAccessError(f"pod {pod_ns or namespace}/{pod_name} has no IP yet")
    return str(ip)
