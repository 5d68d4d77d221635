"""The change tracker, the incremental LB maps (ids kept, deltas only for what changed) and
the BPF encodings."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from pylium.loadbalancer import encoding as enc
from pylium.loadbalancer.changes import ChangeTracker
from pylium.loadbalancer.lbmaps import BACKENDS, SERVICES, LBMaps, LBParams
from pylium.loadbalancer.model import BackendState, L4Addr
from pylium.loadbalancer.servicetable import ServiceTable


def service(name: str, ip: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("ports", [{"name": "http", "port": 80, "targetPort": 8080}])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "test"},
        "spec": {"clusterIP": ip, **spec},
    }


def endpoint_slice(svc: str, *addresses: str, name: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name or f"{svc}-1",
            "namespace": "test",
            "labels": {"kubernetes.io/service-name": svc},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [a], "nodeName": "lab-node1"} for a in addresses],
        "ports": [{"name": "http", "port": 8080}],
    }


def test_tracker_keeps_first_old_and_latest_new() -> None:
    """Several updates collapse into (first old, latest new); a round trip disappears."""
    tracker: ChangeTracker[str, int] = ChangeTracker()
    tracker.record("a", None, 1)
    tracker.record("a", 1, 2)
    tracker.record("b", 5, 6)
    tracker.record("b", 6, 5)
    changes = tracker.take()
    assert list(changes) == ["a"]
    assert (changes["a"].old, changes["a"].new) == (None, 2)
    assert tracker.take() == {}


def test_table_drops_add_then_delete() -> None:
    """A service added and deleted between two syncs is no change at all."""
    table = ServiceTable()
    table.upsert_service(service("web", "10.96.0.1"))
    table.delete_service(service("web", "10.96.0.1"))
    assert table.take_changes() == {}


def test_scaling_touches_only_the_changed_backend() -> None:
    """Adding a backend writes its backend entry, one slot and the new count: existing backend
    ids stay, and an unrelated service is not rewritten."""
    table = ServiceTable()
    maps = LBMaps(LBParams("lab-node1"))
    table.upsert_service(service("web", "10.96.0.1"))
    table.upsert_service(service("other", "10.96.0.2"))
    table.upsert_slice(endpoint_slice("web", "10.244.1.5"))
    table.upsert_slice(endpoint_slice("other", "10.244.1.9"))
    maps.sync(table.take_changes())
    ids = {addr: i for i, (addr, _) in maps.contents[BACKENDS].items()}
    table.upsert_slice(endpoint_slice("web", "10.244.1.5", "10.244.1.6"))
    delta = maps.sync(table.take_changes())
    new_ids = {addr: i for i, (addr, _) in maps.contents[BACKENDS].items()}
    for addr, i in ids.items():
        assert new_ids[addr] == i
    assert len(delta.upserts[BACKENDS]) == 1
    written = {enc.ServiceKey.decode(k) for k in delta.upserts[SERVICES]}
    assert {(k.address.address, k.slot) for k in written} == {
        (IPv4Address("10.96.0.1"), 0),
        (IPv4Address("10.96.0.1"), 2),
    }
    assert not any(delta.deletes.values())


def test_delete_removes_every_entry_and_frees_ids() -> None:
    """Deleting the service deletes exactly what it wrote; the ids are free again."""
    table = ServiceTable()
    maps = LBMaps(LBParams("lab-node1"))
    table.upsert_service(service("web", "10.96.0.1", sessionAffinity="ClientIP"))
    table.upsert_slice(endpoint_slice("web", "10.244.1.5", "10.244.1.6"))
    written = maps.sync(table.take_changes())
    table.delete_service(service("web", "10.96.0.1"))
    deleted = maps.sync(table.take_changes())
    for m, entries in written.upserts.items():
        assert set(entries) == deleted.deletes[m], m
    assert maps.empty()
    table.upsert_service(service("web", "10.96.0.1"))
    maps.sync(table.take_changes())
    assert "SVC: ID=1 " in maps.dump()


def test_node_addresses_change_redoes_nodeports() -> None:
    """A new node address adds NodePort frontends for it."""
    table = ServiceTable()
    maps = LBMaps(LBParams("lab-node1"))
    table.upsert_service(
        service("np", "10.96.0.3", type="NodePort", ports=[{"port": 80, "nodePort": 30001}])
    )
    maps.sync(table.take_changes())
    assert "192.168.10.2:30001" not in maps.dump()
    maps.set_node_addresses([IPv4Address("192.168.10.2")])
    assert "SVC: ID=3 ADDR=192.168.10.2:30001/TCP SLOT=0" in maps.dump()


def test_encodings_round_trip_and_sizes() -> None:
    """Keys and values have Cilium's sizes and decode to what was encoded; ports are in
    network byte order."""
    key = enc.ServiceKey(L4Addr(IPv4Address("10.96.0.1"), 80, "TCP"), 2, enc.SCOPE_INTERNAL)
    data = key.encode()
    assert len(data) == 12
    assert data[:6] == bytes([10, 96, 0, 1, 0, 80])
    assert enc.ServiceKey.decode(data) == key
    value = enc.ServiceValue(7, 3, 9, enc.SVC_FLAG_NODEPORT, enc.SVC_FLAG2_TWO_SCOPES, 1)
    assert len(value.encode()) == 12
    assert enc.ServiceValue.decode(value.encode()) == value
    addr = L4Addr(IPv4Address("10.244.1.5"), 8080, "UDP")
    k, v = enc.encode_backend(5, addr, BackendState.TERMINATING)
    assert (len(k), len(v)) == (4, 12)
    assert enc.decode_backend(k, v) == (5, addr, BackendState.TERMINATING)
    assert enc.master_word(10800, "maglev") == 10800 | 2 << 24
    rk, rv = enc.encode_revnat(3, IPv4Address("10.96.0.1"), 443)
    assert (rk, rv) == (b"\x03\x00", bytes([10, 96, 0, 1, 1, 187, 0, 0]))
    mk, mv = enc.encode_maglev(3, (1, 2, 1))
    assert mk == b"\x03\x00" and len(mv) == 12


def test_subscribers_see_the_same_changes() -> None:
    """A consumer subscribing late starts with every service as an addition, then gets the
    same changes as the main consumer, independently of when each takes them."""
    table = ServiceTable()
    table.upsert_service(service("web", "10.96.0.1"))
    table.take_changes()
    late = table.subscribe()
    assert [c.old for c in late.take().values()] == [None]
    table.upsert_slice(endpoint_slice("web", "10.244.1.5"))
    main = table.take_changes()
    other = late.take()
    assert main == other and len(main) == 1
