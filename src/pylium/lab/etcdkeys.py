"""A lab's keys in a shared etcd: everything under the lab's key root (`etcd://HOST:PORT/<lab>`),
removed by `pylium lab down` so the next lab of that name starts empty."""

from __future__ import annotations

import aetcd

from pylium.store.etcd import grpc_target, parse_url

CLEAR_TIMEOUT = 5.0
"""Seconds to wait for etcd: `lab down` must not hang on an etcd that is gone."""


async def clear(store_url: str) -> int:
    """Delete every key under the store URL's root; returns how many went.

    Raises:
        ValueError: the URL has no key root (clearing it would wipe the whole etcd).
    """
    endpoints, root = parse_url(store_url.removeprefix("etcd://"))
    if not root:
        raise ValueError(f"{store_url}: no key root; refusing to clear the whole etcd")
    host, _, port = grpc_target(endpoints).rpartition(":")
    async with aetcd.Client(host, int(port), timeout=CLEAR_TIMEOUT) as client:
        deleted = await client.delete_prefix(f"{root}/".encode())
    return int(deleted.deleted)
