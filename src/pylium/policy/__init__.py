"""Network policy control plane, L3/L4 (DESIGN §1.5): from policy objects to per-endpoint
policy-map entries, and the tracer behind `pylium policy trace`.

- `selector`: label and CIDR selectors over identities.
- `rules`: NetworkPolicy / CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy -> rules.
- `selectorcache`: selector -> identities, updated one identity at a time.
- `mapstate`: policy-map keys (port ranges as prefix blocks) and their byte encoding.
- `compute`: an endpoint's policy (isolation, deny precedence, enforcement modes, audit).
- `repository`: namespaces, pods and policies in; endpoint policies and change events out.
- `trace`: the verdict of a connection and the rules that decided it.
- `watcher`: the component that feeds a repository from the store (imported on its own).
"""

from __future__ import annotations

from pylium.policy.compute import Decision, EndpointPolicy, Enforcement, PolicyConfig
from pylium.policy.mapstate import (
    PolicyEntry,
    PolicyKey,
    encode_entry,
    encode_key,
    port_range_prefixes,
)
from pylium.policy.repository import Endpoint, IdentityNumbers, Numbering, Repository, load
from pylium.policy.rules import KINDS, Direction, PolicyRef, Rule, policy_ref, rules_of
from pylium.policy.selectorcache import SelectionChange, SelectorCache
from pylium.policy.trace import Trace, trace

__all__ = [
    "KINDS",
    "Decision",
    "Direction",
    "Endpoint",
    "EndpointPolicy",
    "Enforcement",
    "IdentityNumbers",
    "Numbering",
    "PolicyConfig",
    "PolicyEntry",
    "PolicyKey",
    "PolicyRef",
    "Repository",
    "Rule",
    "SelectionChange",
    "SelectorCache",
    "Trace",
    "encode_entry",
    "encode_key",
    "load",
    "policy_ref",
    "port_range_prefixes",
    "rules_of",
    "trace",
]
