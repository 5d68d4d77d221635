"""Policy verdicts in flows: the datapath's verdict (AUDIT passes), and the policies the agent
names for an event's cookie in `*_allowed_by` / `*_denied_by`, through JSON and protobuf."""

from __future__ import annotations

from pylium.datapath.events import Direction, DropReason, EventType, PolicyVerdict
from pylium.hubble.convert import flow_from_proto, flow_to_proto
from pylium.hubble.flow import Flow, Policy, Verdict
from pylium.hubble.parser import FlowParser
from tests.unit.hubble.flows import T0
from tests.unit.hubble.test_parser import FakeLookup, event

NAMED = Policy(
    "allow-web", "default", "NetworkPolicy", ("netpol:default/allow-web spec.ingress[0]",)
)


def parser(seen: list[int]) -> FlowParser:
    def policies(ev) -> tuple[Policy, ...]:
        seen.append(ev.policy_cookie)
        return (NAMED,)

    return FlowParser(FakeLookup(), "n1", clock=lambda: T0, policies=policies)


def test_that_an_allowed_new_connection_names_the_allowing_policy():
    seen: list[int] = []
    flow = parser(seen).parse(
        event(direction=Direction.INGRESS, policy_verdict=PolicyVerdict.ALLOWED, policy_cookie=7)
    )

    assert seen == [7]
    assert flow.verdict == Verdict.FORWARDED
    assert (flow.ingress_allowed_by, flow.ingress_denied_by, flow.egress_allowed_by) == (
        (NAMED,),
        (),
        (),
    )


def test_that_a_policy_drop_names_the_denying_policy_with_reason_133():
    flow = parser([]).parse(
        event(
            type=EventType.DROP,
            drop_reason=DropReason.POLICY_DENIED,
            trace_point=None,
            direction=Direction.EGRESS,
            policy_verdict=PolicyVerdict.DENIED,
        )
    )

    assert (flow.verdict, flow.drop_reason) == (Verdict.DROPPED, 133)
    assert flow.egress_denied_by == (NAMED,)


def test_that_an_audit_verdict_passes_as_audit_naming_the_policy_that_would_deny():
    flow = parser([]).parse(event(direction=Direction.INGRESS, policy_verdict=PolicyVerdict.AUDIT))

    assert flow.verdict == Verdict.AUDIT
    assert flow.ingress_denied_by == (NAMED,)


def test_that_an_event_without_a_policy_lookup_names_no_policy():
    seen: list[int] = []
    flow = parser(seen).parse(event())

    assert seen == [] and flow.ingress_allowed_by == flow.egress_allowed_by == ()


def test_that_named_policies_survive_json_and_protobuf():
    flow = parser([]).parse(
        event(direction=Direction.INGRESS, policy_verdict=PolicyVerdict.ALLOWED, policy_cookie=1)
    )

    assert flow.to_json()["ingress_allowed_by"] == [
        {
            "name": "allow-web",
            "namespace": "default",
            "labels": ["netpol:default/allow-web spec.ingress[0]"],
            "kind": "NetworkPolicy",
        }
    ]
    assert Flow.from_json(flow.to_json()) == flow
    assert flow_from_proto(flow_to_proto(flow)).ingress_allowed_by == (NAMED,)
