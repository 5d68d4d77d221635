"""The LPM_TRIE key/value bytes a datapath reconciler writes."""

from __future__ import annotations

import sys
from ipaddress import IPv4Address, IPv4Network

from pylium.ipcache import Entry, Source, decode_key, decode_value, lpm_key, lpm_value
from pylium.ipcache.encoding import IPCACHE_FLAG_HAS_TUNNEL_EP, Value


def test_key_is_host_order_prefixlen_then_network_order_ip() -> None:
    """10.244.1.0/24 -> prefixlen 24 in host order, then 0a f4 01 00."""
    key = lpm_key(IPv4Network("10.244.1.0/24"))
    assert key == (24).to_bytes(4, sys.byteorder) + bytes([10, 244, 1, 0])
    assert decode_key(key) == IPv4Network("10.244.1.0/24")
    assert lpm_key(IPv4Network("0.0.0.0/0")) == bytes(8)


def test_value_carries_identity_tunnel_and_flags() -> None:
    """A remote pod's value: identity in host order, tunnel endpoint in network order, the
    has-tunnel flag set; a local one has a zero endpoint and no flag."""
    remote = Entry(
        IPv4Network("10.244.2.7/32"), 258, IPv4Address("192.168.10.2"), "n2", Source.POD, "pod/a/p"
    )
    data = lpm_value(remote)
    assert len(data) == 12
    assert data[:4] == (258).to_bytes(4, sys.byteorder)
    assert data[4:8] == bytes([192, 168, 10, 2])
    assert data[8:] == bytes([0, 0, 0, IPCACHE_FLAG_HAS_TUNNEL_EP])
    assert decode_value(data) == Value(
        258, IPv4Address("192.168.10.2"), 0, 0, IPCACHE_FLAG_HAS_TUNNEL_EP
    )
    local = Entry(IPv4Network("10.244.1.5/32"), 1, None, "n1", Source.LOCAL, "node/n1")
    assert lpm_value(local) == (1).to_bytes(4, sys.byteorder) + bytes(8)
    assert decode_value(lpm_value(local)).tunnel_endpoint is None
