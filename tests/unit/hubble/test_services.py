"""Socket-LB translation events name their Service through the agent's LB maps."""

from __future__ import annotations

from pylium.hubble.flow import Service
from pylium.hubble.services import ServiceNames
from pylium.loadbalancer.lbmaps import REVNAT, LBMaps, LBParams
from pylium.loadbalancer.servicetable import ServiceTable
from tests.unit.loadbalancer.test_lbmaps import endpoint_slice, service


def test_that_a_rev_nat_id_names_its_service_until_the_service_is_gone():
    table = ServiceTable()
    maps = LBMaps(LBParams("lab-node1"))
    table.upsert_service(service("web", "10.96.0.1"))
    table.upsert_service(service("db", "10.96.0.2"))
    table.upsert_slice(endpoint_slice("web", "10.244.1.5"))
    maps.sync(table.take_changes())
    ids = {str(addr.address): i for i, addr in maps.contents[REVNAT].items()}
    names = ServiceNames(maps)

    assert names(ids["10.96.0.1"]) == Service("web", "test")
    assert names(ids["10.96.0.2"]) == Service("db", "test")
    assert names(max(ids.values()) + 1) is None

    table.delete_service(service("web", "10.96.0.1"))
    maps.sync(table.take_changes())
    assert names(ids["10.96.0.1"]) is None
