"""`pylium policy trace` and `pylium get policies` over a temporary sqlite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pylium.cli.main import cli

MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {ns: x}}
---
apiVersion: v1
kind: Namespace
metadata: {name: y, labels: {ns: y}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec:
  containers: [{name: c, image: agnhost, ports: [{containerPort: 80, name: http}]}]
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
spec: {containers: [{name: c, image: agnhost}]}
status: {podIP: 10.244.1.11}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: y, labels: {pod: b}}
spec: {containers: [{name: c, image: agnhost}]}
status: {podIP: 10.244.1.12}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-b-http, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
    ports: [{port: http}]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: no-world}
spec:
  endpointSelector: {}
  egressDeny: [{toEntities: [world]}]
  enableDefaultDeny: {egress: false}
"""


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYLIUM_STORE", f"sqlite://{tmp_path}/store.db")
    applied = run("apply", "-f", "-", input=MANIFEST)
    assert applied.exit_code == 0, applied.output


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def test_trace_allowed_names_the_rule(store: None) -> None:
    """x/b -> x/a 80/TCP passes ingress by the NetworkPolicy's rule (named port http)."""
    result = run("policy", "trace", "--from", "x/b", "--to", "x/a", "--port", "80/TCP")
    assert result.exit_code == 0, result.output
    assert "ingress of x/a: ALLOWED (allow)" in result.output
    assert "by netpol:x/allow-b-http spec.ingress[0]" in result.output
    assert result.output.rstrip().endswith("Final verdict: ALLOWED")


def test_trace_denied_json(store: None) -> None:
    """y/b -> x/a is dropped by default deny (exit 1); JSON names the isolating rule."""
    result = run(
        "policy", "trace", "--from", "y/b", "--to", "x/a", "--port", "80/tcp", "-o", "json"
    )
    assert result.exit_code == 1
    doc = json.loads(result.output)
    assert doc["verdict"] == "denied"
    assert doc["ingress"] == {
        "verdict": "denied",
        "reason": "default-deny",
        "rules": ["netpol:x/allow-b-http spec.ingress[0]"],
        "dropReason": 133,
    }
    assert doc["egress"]["rules"] == ["(no default-deny policy selects the endpoint)"]


def test_trace_unknown_pod_and_bad_port(store: None) -> None:
    """A missing pod and a malformed port are errors, not verdicts."""
    missing = run("policy", "trace", "--from", "x/zz", "--to", "x/a", "--port", "80/TCP")
    assert missing.exit_code == 1 and 'pod "x/zz" not found' in missing.output
    bad = run("policy", "trace", "--from", "x/b", "--to", "x/a", "--port", "http")
    assert bad.exit_code == 2 and "want PORT/PROTO" in bad.output


def test_get_policies_lists_every_kind_with_selections(store: None) -> None:
    """NAME, KIND and how many endpoints each policy selects, across namespaces."""
    result = run("get", "policies", "-A")
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.output.splitlines()]
    assert lines[0] == ["NAMESPACE", "NAME", "KIND", "SELECTS"]
    assert ["x", "allow-b-http", "NetworkPolicy", "1", "endpoints"] in lines
    assert ["<none>", "no-world", "CiliumClusterwideNetworkPolicy", "3", "endpoints"] in lines
