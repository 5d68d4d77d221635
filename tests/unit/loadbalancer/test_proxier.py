"""kube-proxy mode: chain names match kube-proxy's own fixtures; syncs are full first and
after a failure, incremental otherwise, and bookkeeping follows only successful loads."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from pylium.loadbalancer.kubeproxy import names
from pylium.loadbalancer.kubeproxy.params import ProxyParams
from pylium.loadbalancer.kubeproxy.proxier import Mode, Proxier
from pylium.loadbalancer.model import Endpoint, ServiceName, ServicePort
from pylium.loadbalancer.servicetable import ServiceTable
from tests.unit.loadbalancer.test_lbmaps import endpoint_slice, service

PARAMS = ProxyParams(
    "lab-node1", (IPv4Address("192.168.10.2"),), IPv4Network("10.244.0.0/16"), None
)


class Recorder:
    """An applier that records what it is given and can be told to fail once."""

    def __init__(self) -> None:
        self.loaded: list[str] = []
        self.fail_next = False

    def apply(self, mode: Mode, text: str) -> None:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("kernel said no")
        self.loaded.append(text)


def test_names_match_kube_proxy_fixtures() -> None:
    """The hashes equal those in kube-proxy's proxier tests for ns1/svc1:p80 -> 10.180.0.1:80."""
    sp = ServicePort(ServiceName("ns1", "svc1"), "p80", "TCP", 80, IPv4Address("172.30.0.41"))
    ep = Endpoint(IPv4Address("10.180.0.1"), 80)
    assert names.svc_chain(sp) == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert names.sep_chain(sp, ep) == "KUBE-SEP-SXIVWICOYRO3J4NJ"
    assert names.nft_service_chain(sp) == "service-ULMVA6XW-ns1/svc1/tcp/p80"
    assert names.nft_endpoint_chain(sp, ep) == "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"


def two_services() -> ServiceTable:
    table = ServiceTable()
    table.upsert_service(service("a", "10.96.0.1"))
    table.upsert_service(service("b", "10.96.0.2"))
    table.upsert_slice(endpoint_slice("a", "10.244.1.5"))
    table.upsert_slice(endpoint_slice("b", "10.244.1.6"))
    return table


def test_iptables_partial_sync_writes_only_changed_chains() -> None:
    """After the full first sync, scaling service a rewrites a's chains and the dispatch
    chains, not b's; the endpoint chain a lost is deleted with -X."""
    table, rec = two_services(), Recorder()
    proxier = Proxier(Mode.IPTABLES, PARAMS, rec)
    proxier.sync(table)
    a = next(sp for sp in table.states()[ServiceName("test", "a")].ports)
    b = next(sp for sp in table.states()[ServiceName("test", "b")].ports)
    assert f":{names.svc_chain(b)} - [0:0]" in rec.loaded[0]
    old_sep = names.sep_chain(a, a.endpoints[0])
    table.upsert_slice(endpoint_slice("a", "10.244.1.7"))
    text = proxier.sync(table)
    assert f":{names.svc_chain(b)} - [0:0]" not in text
    assert f'-A KUBE-SERVICES -m comment --comment "{b.port_name} cluster IP"' in text
    assert f":{names.svc_chain(a)} - [0:0]" in text
    assert f"-X {old_sep}" in text
    assert "--to-destination 10.244.1.7:8080" in text
    assert proxier.full_syncs == 1
    assert proxier.sync(table) == ""


def test_nftables_partial_sync_and_deferred_chain_delete() -> None:
    """A partial nft sync replaces a's elements and chains only; a's stale endpoint chain is
    flushed now and deleted by the next sync."""
    table, rec = two_services(), Recorder()
    proxier = Proxier(Mode.NFTABLES, PARAMS, rec)
    first = proxier.sync(table)
    assert first.startswith("add table ip kube-proxy\ndelete table ip kube-proxy\n")
    a = table.states()[ServiceName("test", "a")].ports[0]
    old_chain = names.nft_endpoint_chain(a, a.endpoints[0])
    table.upsert_slice(endpoint_slice("a", "10.244.1.7"))
    text = proxier.sync(table)
    assert "delete table" not in text and "/b/" not in text
    assert f"flush chain ip kube-proxy {old_chain}" in text
    assert f"delete chain ip kube-proxy {old_chain}" not in text
    table.delete_service(service("b", "10.96.0.2"))
    text = proxier.sync(table)
    assert f"delete chain ip kube-proxy {old_chain}" in text
    assert "delete element ip kube-proxy service-ips { 10.96.0.2 . tcp . 80 }" in text


@pytest.mark.parametrize("mode", list(Mode))
def test_failure_forces_a_full_sync(mode: Mode) -> None:
    """When loading fails, the next sync is full even though the tracker has moved on."""
    table, rec = two_services(), Recorder()
    proxier = Proxier(mode, PARAMS, rec)
    proxier.sync(table)
    table.upsert_slice(endpoint_slice("a", "10.244.1.7"))
    rec.fail_next = True
    with pytest.raises(RuntimeError):
        proxier.sync(table)
    table.upsert_slice(endpoint_slice("b", "10.244.1.8"))
    text = proxier.sync(table)
    assert proxier.full_syncs == 2
    assert "10.244.1.7:8080" in text and "10.244.1.8:8080" in text
