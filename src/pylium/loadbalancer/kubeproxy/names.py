"""Chain names exactly as kube-proxy computes them, so users recognise them.

iptables (`pkg/proxy/iptables/proxier.go`): `KUBE-SVC-` + the first 16 base32 characters of
sha256(servicePortName + protocol), the same hash for `KUBE-SVL-`/`KUBE-EXT-`; `KUBE-SEP-` hashes
servicePortName + protocol + endpoint (`ip:port`). nftables (`pkg/proxy/nftables/proxier.go`):
`service-ULMVA6XW-ns1/svc1/tcp/p80`: 8 hash characters then the readable base
`namespace/name/protocol/portName` (all of whose characters nft allows in a chain name);
endpoint chains append `__ip/port`.
"""

from __future__ import annotations

import base64
import hashlib

from pylium.loadbalancer.model import Endpoint, ServicePort

NFT_CHAIN_MAX = 256
"""NFT_CHAIN_MAXNAMELEN; kube-proxy's bases fit well below it."""


def _b32(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()


def port_proto_hash(sp: ServicePort) -> str:
    """kube-proxy's portProtoHash."""
    return _b32(sp.port_name + sp.protocol.lower())[:16]


def svc_chain(sp: ServicePort) -> str:
    """`KUBE-SVC-...`: the cluster-policy chain."""
    return "KUBE-SVC-" + port_proto_hash(sp)


def svl_chain(sp: ServicePort) -> str:
    """`KUBE-SVL-...`: the local-policy chain."""
    return "KUBE-SVL-" + port_proto_hash(sp)


def ext_chain(sp: ServicePort) -> str:
    """`KUBE-EXT-...`: external traffic (NodePort, external and LB IPs)."""
    return "KUBE-EXT-" + port_proto_hash(sp)


def sep_chain(sp: ServicePort, ep: Endpoint) -> str:
    """`KUBE-SEP-...`: one endpoint's DNAT chain."""
    return "KUBE-SEP-" + _b32(sp.port_name + sp.protocol.lower() + ep.addr_port)[:16]


def hash_and_truncate(name: str) -> str:
    """kube-proxy's hashAndTruncate: 8 hash characters, '-', the name (cut to fit)."""
    out = _b32(name)[:8] + "-" + name
    return out if len(out) <= NFT_CHAIN_MAX else out[: NFT_CHAIN_MAX - 3] + "..."


def nft_base(sp: ServicePort) -> str:
    """`namespace/name/protocol/portName`."""
    return f"{sp.service.namespace}/{sp.service.name}/{sp.protocol.lower()}/{sp.name}"


def nft_service_chain(sp: ServicePort) -> str:
    """`service-HASH-ns/svc/tcp/port`: the cluster-policy chain."""
    return "service-" + hash_and_truncate(nft_base(sp))


def nft_local_chain(sp: ServicePort) -> str:
    """`local-HASH-...`: the local-policy chain."""
    return "local-" + hash_and_truncate(nft_base(sp))


def nft_external_chain(sp: ServicePort) -> str:
    """`external-HASH-...`: external traffic."""
    return "external-" + hash_and_truncate(nft_base(sp))


def nft_endpoint_base(sp: ServicePort, ep: Endpoint) -> str:
    """`HASH-ns/svc/tcp/port__ip/port`."""
    return hash_and_truncate(f"{nft_base(sp)}__{ep.address}/{ep.port}")


def nft_endpoint_chain(sp: ServicePort, ep: Endpoint) -> str:
    """`endpoint-HASH-ns/svc/tcp/port__ip/port`."""
    return "endpoint-" + nft_endpoint_base(sp, ep)


def nft_affinity_set(sp: ServicePort, ep: Endpoint) -> str:
    """`affinity-HASH-...`: clients stuck to one endpoint."""
    return "affinity-" + nft_endpoint_base(sp, ep)
