"""The objects `pylium lab up` writes into the store: namespaces, and per node its Node and
CiliumNode with the node's underlay address as InternalIP (other nodes route to its pod CIDR
through it). The operator then fills each CiliumNode's pod CIDR; `pod_cidrs` waits for that,
and `mirror_pod_cidrs` copies it into the Node's spec, where `pylium get nodes` shows it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pylium.agent.ciliumnode import pod_cidr_of
from pylium.api import validate
from pylium.lab.record import LabRecord
from pylium.store import Conflict, Object, open_store

NAMESPACES = ("default", "kube-system")


def objects(lab: LabRecord) -> list[Object]:
    """Every object a fresh lab starts with, validated."""
    objs: list[Object] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in NAMESPACES
    ]
    for node in lab.nodes:
        labels = {"kubernetes.io/hostname": node.name, "pylium.io/lab": lab.name}
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": node.name, "labels": labels},
                "status": {"addresses": [{"type": "InternalIP", "address": node.underlayIP}]},
            }
        )
        objs.append(
            {
                "apiVersion": "cilium.io/v2",
                "kind": "CiliumNode",
                "metadata": {"name": node.name, "labels": labels},
                "spec": {"addresses": [{"type": "InternalIP", "ip": node.underlayIP}]},
            }
        )
    return [validate(o) for o in objs]


async def pod_cidrs(
    lab: LabRecord, timeout: float, alive: Callable[[], bool]
) -> dict[str, str] | None:
    """Node name -> pod CIDR once every node's CiliumNode has one; None after `timeout` or
    once `alive()` (is the operator still running?) says no."""
    store = open_store(lab.store)
    deadline = time.monotonic() + timeout
    try:
        while True:
            objs, _ = await store.list("CiliumNode")
            found = {o["metadata"]["name"]: pod_cidr_of(o) for o in objs}
            cidrs = {n.name: found.get(n.name) for n in lab.nodes}
            if all(cidrs.values()):
                return {name: str(cidr) for name, cidr in cidrs.items()}
            if time.monotonic() > deadline or not alive():
                return None
            await asyncio.sleep(0.05)
    finally:
        await store.close()


async def mirror_pod_cidrs(lab: LabRecord) -> None:
    """Copy each node's pod CIDR into its Node's spec (CAS, re-read on conflict)."""
    store = open_store(lab.store)
    try:
        for node in lab.nodes:
            while True:
                obj = await store.get("Node", "", node.name)
                obj["spec"] = {**(obj.get("spec") or {}), "podCIDR": node.podCIDR}
                obj["spec"]["podCIDRs"] = [node.podCIDR]
                try:
                    await store.update(obj)
                    break
                except Conflict:
                    continue
    finally:
        await store.close()


async def seed(lab: LabRecord) -> None:
    """Write the lab's starting objects (apply: re-running changes nothing)."""
    store = open_store(lab.store)
    try:
        for obj in objects(lab):
            await store.apply(obj)
    finally:
        await store.close()
