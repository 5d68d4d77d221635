"""The NetworkPolicy truth-table model of `shared/conformance/netpol/cases.yaml`, run in pure
Python through the policy repository and the tracer (the datapath later runs the same cases
against a lab).

Probes address pods directly: upstream probes through each pod's ClusterIP, and the policy
decision is taken after service translation, so the expected tables are the same; running
them through a Service VIP is the datapath conformance's matter.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from pylium.api import validate
from pylium.lab.conformance.cases import CASES_FILE, NAME_LABEL, load_cases, substitute
from pylium.policy import Repository, trace

__all__ = ["CASES_FILE", "NAME_LABEL", "Model", "load_cases", "run_case"]

POD_SUBNET = ipaddress.ip_network("10.244.1.0/24")


@dataclass
class Model:
    """The namespaces and pods of the truth-table model, mirrored into a Repository."""

    serve: dict[str, Any]
    repo: Repository = field(default_factory=Repository)
    ips: dict[str, str] = field(default_factory=dict)
    _next_ip: int = 10

    @classmethod
    def build(cls, model: dict[str, Any], repo: Repository | None = None) -> Model:
        """Namespaces and pods as the case file's model describes them, into `repo` (a fresh
        default one if None)."""
        out = cls(model["serve"], repo or Repository())
        for name, ns in model["namespaces"].items():
            out.set_namespace(name, ns.get("labels") or {})
        for key, pod in model["pods"].items():
            out.set_pod(key, pod.get("labels") or {})
        return out

    def set_namespace(self, name: str, labels: dict[str, str]) -> None:
        """Create or relabel a namespace (the API server's name label is always there)."""
        obj = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {**labels, NAME_LABEL: name}},
        }
        self.repo.set_namespace(validate(obj))

    def set_pod(self, key: str, labels: dict[str, str]) -> None:
        """Create or relabel a pod serving every (port, protocol) of the model."""
        namespace, name = key.split("/")
        if key not in self.ips:
            self.ips[key] = str(POD_SUBNET[self._next_ip])
            self._next_ip += 1
        ports = [
            {"containerPort": port, "protocol": proto, "name": f"serve-{port}-{proto.lower()}"}
            for port in self.serve["ports"]
            for proto in self.serve["protocols"]
        ]
        obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"containers": [{"name": "serve", "image": "agnhost", "ports": ports}]},
            "status": {"phase": "Running", "podIP": self.ips[key]},
        }
        self.repo.set_pod(validate(obj))

    def substitute(self, value: Any) -> Any:
        """Replace `{{hostCIDR:NS/POD}}` / `{{wideCIDR:NS/POD}}` with the pod's address."""
        return substitute(value, self.ips)

    def apply(self, action: dict[str, Any]) -> None:
        """One step action of the case file."""
        ((verb, arg),) = action.items()
        if verb in ("create_policy", "update_policy"):
            self.repo.set_policy(validate(self.substitute(arg)))
        elif verb == "delete_policy":
            self.repo.delete_policy("NetworkPolicy", arg["namespace"], arg["name"])
        elif verb == "delete_all_policies":
            for ref in list(self.repo.rules()):
                self.repo.delete_policy(ref.kind, ref.namespace, ref.name)
        elif verb in ("set_namespace_labels", "create_namespace"):
            self.set_namespace(arg.get("namespace") or arg["name"], arg.get("labels") or {})
        elif verb == "delete_namespace":
            self.repo.delete_namespace(arg["name"])
            self.ips = {k: v for k, v in self.ips.items() if not k.startswith(arg["name"] + "/")}
        elif verb in ("set_pod_labels", "create_pod"):
            self.set_pod(arg["pod"], arg.get("labels") or {})
        elif verb == "delete_pod":
            namespace, name = arg["pod"].split("/")
            self.repo.delete_pod(namespace, name)
            self.ips.pop(arg["pod"])
        else:
            raise ValueError(f"unknown action {verb}")

    def check(self, probe: dict[str, Any]) -> list[str]:
        """Mismatches of one probe's expectation (empty when the table matches)."""
        port, protocol = probe["port"], probe["protocol"]
        pods = sorted(self.repo.endpoints())
        wrong = []
        for src, allowed in probe["expected"].items():
            for dst in pods:
                if dst == src:
                    continue
                result = trace(self.repo, src, dst, port, protocol)
                if result.allowed != (dst in allowed):
                    want = "allowed" if dst in allowed else "blocked"
                    why = "; ".join(
                        f"{d}: {dec.verdict} {dec.reason} {list(dec.rules)}"
                        for d, dec in (("egress", result.egress), ("ingress", result.ingress))
                    )
                    wrong.append(f"{src} -> {dst} {port}/{protocol}: want {want}, got {why}")
        return wrong


def run_case(model_spec: dict[str, Any], case: dict[str, Any]) -> list[str]:
    """Run one case from a fresh model; the mismatches of every probe, per step."""
    model = Model.build(model_spec)
    failures: list[str] = []
    for policy in case.get("policies") or []:
        model.apply({"create_policy": policy})
    for probe in case["probes"]:
        failures += [f"initial: {w}" for w in model.check(probe)]
    for i, step in enumerate(case.get("steps") or []):
        for action in step["actions"]:
            model.apply(action)
        for probe in step["probes"]:
            failures += [
                f"step {i} ({step.get('description', '')}): {w}" for w in model.check(probe)
            ]
    return failures
