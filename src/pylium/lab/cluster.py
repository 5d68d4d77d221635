"""The objects `pylium lab up` writes into the store: namespaces, and per node its Node and
CiliumNode (the pod CIDR the agent reads at start, as the operator would hand out)."""

from __future__ import annotations

from pylium.api import validate
from pylium.lab.record import LabRecord
from pylium.store import Object, open_store

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
                "spec": {"podCIDR": node.podCIDR, "podCIDRs": [node.podCIDR]},
            }
        )
        objs.append(
            {
                "apiVersion": "cilium.io/v2",
                "kind": "CiliumNode",
                "metadata": {"name": node.name, "labels": labels},
                "spec": {"ipam": {"podCIDRs": [node.podCIDR]}},
            }
        )
    return [validate(o) for o in objs]


async def seed(lab: LabRecord) -> None:
    """Write the lab's starting objects (apply: re-running changes nothing)."""
    store = open_store(lab.store)
    try:
        for obj in objects(lab):
            await store.apply(obj)
    finally:
        await store.close()
