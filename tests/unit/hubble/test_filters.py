"""Flow filters follow Hubble: values of a field are ORed, fields ANDed, whitelist filters
ORed, blacklist excludes; `pylium observe` options expand to either side."""

from __future__ import annotations

import pytest

from pylium.hubble.filters import FlowFilter, FlowQuery, InvalidFilter, matches
from pylium.hubble.flow import TCP, TrafficDirection, Verdict
from tests.unit.hubble.flows import DB, UDP, WEB1, WEB2, WORLD, ICMPv4, make_flow

WEB1_TO_WEB2_TCP80 = make_flow(WEB1, WEB2, TCP(43210, 80))
WEB2_TO_DB_UDP53 = make_flow(WEB2, DB, UDP(5000, 53))
DB_TO_WORLD_DROP = make_flow(DB, WORLD, TCP(40000, 443), verdict=Verdict.DROPPED)
WEB1_PING_WORLD = make_flow(WEB1, WORLD, ICMPv4(type=8))
ALL = {
    "web1->web2": WEB1_TO_WEB2_TCP80,
    "web2->db": WEB2_TO_DB_UDP53,
    "db->world": DB_TO_WORLD_DROP,
    "web1->world": WEB1_PING_WORLD,
}


def selected(query: FlowQuery) -> set[str]:
    whitelist, blacklist = query.filters()
    return {name for name, flow in ALL.items() if matches(flow, whitelist, blacklist)}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (FlowQuery(), set(ALL)),
        (FlowQuery(pod=("web-1",)), {"web1->web2", "web1->world"}),
        (FlowQuery(pod=("default/web",)), {"web1->web2", "web2->db", "web1->world"}),
        (FlowQuery(pod=("db-0",)), set()),  # unqualified names are in "default"
        (FlowQuery(pod=("db-0",), namespace=("prod",)), {"web2->db", "db->world"}),
        (FlowQuery(from_pod=("web-2",)), {"web2->db"}),
        (FlowQuery(to_pod=("web-2",)), {"web1->web2"}),
        (FlowQuery(from_pod=("web-1",), to_pod=("web-2",)), {"web1->web2"}),
        (FlowQuery(namespace=("prod",)), {"web2->db", "db->world"}),
        (FlowQuery(verdict=("dropped",)), {"db->world"}),
        (FlowQuery(verdict=("FORWARDED", "DROPPED")), set(ALL)),
        (FlowQuery(protocol=("udp",)), {"web2->db"}),
        (FlowQuery(protocol=("icmp",)), {"web1->world"}),
        (FlowQuery(protocol=("tcp", "icmp")), {"web1->web2", "db->world", "web1->world"}),
        (FlowQuery(port=("80",)), {"web1->web2"}),
        (FlowQuery(port=("43210",)), {"web1->web2"}),
        (FlowQuery(to_port=("43210",)), set()),
        (FlowQuery(ip=("192.0.2.0/24",)), {"db->world", "web1->world"}),
        (FlowQuery(from_ip=("10.244.1.20",)), {"web2->db"}),
        (FlowQuery(type=("drop",)), set()),  # make_flow sets no event type
        # Either-side options combine: web-1 on one side AND port 80 on one side.
        (FlowQuery(pod=("web-1",), port=("80",)), {"web1->web2"}),
        (FlowQuery(pod=("web-2",), protocol=("udp",)), {"web2->db"}),
        (FlowQuery(negated=FlowQuery(protocol=("icmp",))), set(ALL) - {"web1->world"}),
        (
            FlowQuery(pod=("web-1",), negated=FlowQuery(to_pod=("web-2",))),
            {"web1->world"},
        ),
    ],
)
def test_that_a_query_selects_the_flows_hubble_would(query, expected):
    assert selected(query) == expected


def test_that_whitelist_filters_are_ored_and_fields_anded():
    tcp_from_web1 = FlowFilter(source_pod=("default/web-1",), protocol=("tcp",))
    from_db = FlowFilter(source_pod=("prod/db",))
    chosen = {n for n, f in ALL.items() if matches(f, [tcp_from_web1, from_db], [])}
    assert chosen == {"web1->web2", "db->world"}


def test_that_a_flow_without_a_field_does_not_match_a_filter_on_it():
    assert not FlowFilter(source_port=(80,)).matches(WEB1_PING_WORLD)
    assert not FlowFilter(reply=(True,)).matches(make_flow().__class__(time_ns=0))
    assert FlowFilter(traffic_direction=(TrafficDirection.EGRESS,)).matches(WEB1_PING_WORLD)
    assert FlowFilter(node_name=("lab-*",)).matches(WEB1_PING_WORLD)
    assert not FlowFilter(node_name=("lab",)).matches(WEB1_PING_WORLD)


def test_that_the_query_survives_its_url_form():
    query = FlowQuery(
        pod=("web",), from_pod=("x/a",), verdict=("DROPPED",), negated=FlowQuery(port=("53",))
    )
    params = query.to_params()
    assert ("from-pod", "x/a") in params and ("not-port", "53") in params
    assert FlowQuery.from_params([*params, ("last", "5")]) == query


def test_that_filters_print_in_hubbles_json_form():
    whitelist, _ = FlowQuery(from_pod=("x/a",), verdict=("DROPPED",), to_port=("80",)).filters()
    assert [f.to_json() for f in whitelist] == [
        {"source_pod": ["x/a"], "verdict": ["DROPPED"], "destination_port": ["80"]}
    ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (FlowQuery(verdict=("maybe",)), "invalid verdict 'maybe'"),
        (FlowQuery(port=("http",)), "invalid port 'http'"),
        (FlowQuery(port=("70000",)), "invalid port '70000'"),
        (FlowQuery(ip=("10.1",)), "invalid ip '10.1'"),
        (FlowQuery(protocol=("sctp",)), "invalid protocol 'sctp'"),
        (FlowQuery(type=("l7",)), "invalid type 'l7'"),
        (FlowQuery(pod=("x/",)), "invalid pod 'x/'"),
    ],
)
def test_that_a_bad_value_is_refused_with_its_name(query, message):
    with pytest.raises(InvalidFilter, match=message):
        query.filters()
