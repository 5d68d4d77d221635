"""The endpoint lookup names pods by address from the agent's endpoint list, and reserved
identities for the router and the world."""

from __future__ import annotations

from ipaddress import ip_network

from pylium.endpoint.model import Endpoint as AgentEndpoint
from pylium.hubble.endpoints import EndpointsLookup, IPCacheEndpoints
from pylium.hubble.flow import Endpoint
from pylium.identity import Identity
from pylium.identity.labels import Labels
from pylium.ipcache.table import Entry, IPCacheTable, Source


def agent_endpoint(ep_id: int, ip: str, pod: str, ifindex: int) -> AgentEndpoint:
    return AgentEndpoint(
        id=ep_id,
        container_id=f"c{ep_id}",
        ifname="eth0",
        netns=f"/var/run/netns/p{ep_id}",
        host_ifname=f"lxc{ep_id:011d}",
        state="ready",
        created_at="2025-11-26T09:40:00Z",
        mtu=1500,
        pod_name=pod,
        pod_namespace="default",
        ipv4=ip,
        host_ifindex=ifindex,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_that_addresses_resolve_to_pods_host_and_world():
    eps = [agent_endpoint(7, "10.244.1.10", "web-1", 40)]
    lookup = EndpointsLookup(lambda: eps, router_ip="10.244.1.1", pod_cidr="10.244.1.0/24")

    assert lookup.endpoint_by_ip("10.244.1.10") == Endpoint(
        ID=7,
        namespace="default",
        labels=("k8s:io.kubernetes.pod.namespace=default",),
        pod_name="web-1",
    )
    assert lookup.endpoint_by_ip("10.244.1.1").identity == 1
    assert lookup.endpoint_by_ip("8.8.8.8").identity == 2
    assert lookup.endpoint_by_ip("10.244.1.99") is None  # a pod address nobody holds
    assert lookup.interface_name(40) == "lxc00000000007"
    assert lookup.interface_name(41) == ""


def test_that_the_index_is_rebuilt_when_stale_or_on_a_miss_but_not_per_event():
    eps: list[AgentEndpoint] = []
    calls = []
    clock = Clock()

    def listing():
        calls.append(clock.now)
        return list(eps)

    lookup = EndpointsLookup(listing, max_age=1.0, min_age_on_miss=0.05, clock=clock)
    assert lookup.endpoint_by_ip("10.244.1.10") is None
    eps.append(agent_endpoint(7, "10.244.1.10", "web-1", 40))
    assert lookup.endpoint_by_ip("10.244.1.10") is None  # a miss right after a rebuild
    clock.now += 0.1
    assert lookup.endpoint_by_ip("10.244.1.10").pod_name == "web-1"  # rebuilt on the miss
    for _ in range(100):
        lookup.endpoint_by_ip("10.244.1.10")
    assert len(calls) == 2
    eps[0] = agent_endpoint(7, "10.244.1.10", "web-2", 40)  # the same address, another pod
    clock.now += 1.5
    assert lookup.endpoint_by_ip("10.244.1.10").pod_name == "web-2"  # stale index renewed


class Identities:
    """The allocator's `get`: one pod identity known (more may be added to `known`)."""

    def __init__(self) -> None:
        self.known = {
            4242: Identity(4242, Labels.of(["k8s:app=db", "k8s:io.kubernetes.pod.namespace=x"]))
        }

    def get(self, identity: int) -> Identity | None:
        return self.known.get(identity)


def test_that_the_ipcache_names_pods_of_other_nodes_and_node_addresses():
    """Without it, a remote pod or another node's address would be labelled world."""
    table = IPCacheTable()
    for owner, prefix, identity, source in (
        ("world", "0.0.0.0/0", 2, Source.GENERATED),
        ("node/n2", "192.168.64.3/32", 6, Source.NODE),
        ("pod/x/db", "10.244.2.5/32", 4242, Source.POD),
    ):
        table.set_owner(owner, [Entry(ip_network(prefix), identity, None, "n2", source, owner)])
    eps = [agent_endpoint(7, "10.244.1.10", "web-1", 40)]
    lookup = EndpointsLookup(
        lambda: eps, "10.244.1.1", "10.244.1.0/24", ipcache=IPCacheEndpoints(table, Identities())
    )

    assert lookup.endpoint_by_ip("10.244.1.10").pod_name == "web-1"  # local endpoints first
    assert lookup.endpoint_by_ip("10.244.2.5") == Endpoint(
        identity=4242,
        namespace="x",
        labels=("k8s:app=db", "k8s:io.kubernetes.pod.namespace=x"),
        pod_name="db",
    )
    assert lookup.endpoint_by_ip("192.168.64.3") == Endpoint(
        identity=6, labels=("reserved:remote-node",)
    )
    assert lookup.endpoint_by_ip("203.0.113.1") == Endpoint(identity=2, labels=("reserved:world",))
    table.set_owner("pod/x/db", [])  # the pod left: the cached answer goes with the change
    assert lookup.endpoint_by_ip("10.244.2.5").identity == 2


def test_that_an_identity_the_allocator_learns_late_is_not_cached_without_labels():
    table = IPCacheTable()
    entry = Entry(ip_network("10.244.2.6/32"), 4343, None, "n2", Source.POD, "pod/x/late")
    table.set_owner("pod/x/late", [entry])
    identities = Identities()
    lookup = IPCacheEndpoints(table, identities)

    assert lookup("10.244.2.6") == Endpoint(identity=4343, namespace="x", pod_name="late")
    identities.known[4343] = Identity(4343, Labels.of(["k8s:app=late"]))  # the table unchanged
    assert lookup("10.244.2.6").labels == ("k8s:app=late",)
