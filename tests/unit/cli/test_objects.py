"""`pylium apply/get/delete` through click's CliRunner against a temporary sqlite store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from pylium import paths
from pylium.cli.main import cli
from pylium.store.sqlite import SqliteStore

MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: lab-node1
  containers: [{name: c, image: busybox, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: team}
spec:
  podSelector: {matchLabels: {app: web}}
"""


@pytest.fixture
def store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite://{tmp_path}/store.db"
    monkeypatch.setenv("PYLIUM_STORE", url)
    return url


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def stored(url: str, kind: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        store = SqliteStore(url.removeprefix("sqlite://"))
        try:
            return (await store.list(kind))[0]
        finally:
            await store.close()

    return asyncio.run(read())


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_apply_creates_then_unchanged_then_configured(tmp_path: Path, store_url: str) -> None:
    path = write(tmp_path, "all.yaml", MANIFEST)
    result = run("apply", "-f", path)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "namespace/team created",
        "pod/web created",
        "service/web created",
        "networkpolicy.networking.k8s.io/np created",
    ]
    assert run("apply", "-f", path).stdout.splitlines()[1] == "pod/web unchanged"
    write(tmp_path, "all.yaml", MANIFEST.replace("image: busybox", "image: nginx"))
    assert run("apply", "-f", path).stdout.splitlines()[1] == "pod/web configured"
    assert stored(store_url, "Pod")[0]["spec"]["containers"][0]["image"] == "nginx"


def test_apply_from_stdin_json_list_and_directory(tmp_path: Path, store_url: str) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "lab-node1"}},
            {
                "apiVersion": "cilium.io/v2",
                "kind": "CiliumNode",
                "metadata": {"name": "lab-node1"},
                "spec": {"ipam": {"podCIDRs": ["10.244.1.0/24"]}},
            },
        ],
    }
    result = run("apply", "-f", "-", input=json.dumps(doc))
    assert result.stdout.splitlines() == [
        "node/lab-node1 created",
        "ciliumnode.cilium.io/lab-node1 created",
    ]
    manifests = tmp_path / "dir"
    manifests.mkdir()
    write(manifests, "a.yaml", MANIFEST)
    write(manifests, "notes.txt", "not a manifest")
    assert run("apply", "-f", str(manifests)).stdout.count("created") == 4


def test_invalid_object_rejected_with_field_and_nothing_stored(
    tmp_path: Path, store_url: str
) -> None:
    assert run("apply", "-f", write(tmp_path, "ok.yaml", MANIFEST)).exit_code == 0
    before = stored(store_url, "Pod")
    bad = MANIFEST.replace("containerPort: 8080", "containerPort: 70000").replace(
        "name: team", "name: team2"
    )
    result = run("apply", "-f", write(tmp_path, "bad.yaml", bad))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert (
        'error: Pod "web" is invalid: spec.containers[0].ports[0].containerPort: '
        "must be between 1 and 65535" in result.stderr
    )
    assert stored(store_url, "Pod") == before
    # The valid Namespace in the same batch was not stored either.
    assert [n["metadata"]["name"] for n in stored(store_url, "Namespace")] == ["team"]


def test_get_pods_table_wide_and_all_namespaces(tmp_path: Path, store_url: str) -> None:
    run("apply", "-f", write(tmp_path, "all.yaml", MANIFEST))
    lines = run("get", "pods").stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "IP", "NODE", "AGE"]
    assert lines[1].split()[:5] == ["web", "0/1", "Pending", "<none>", "lab-node1"]
    wide = run("get", "po", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-2:] == ["HOST-IP", "PORTS"]
    assert wide[1].split()[-1] == "8080/TCP"
    all_ns = run("get", "netpol", "-A").stdout.splitlines()
    assert all_ns[0].split() == ["NAMESPACE", "NAME", "POD-SELECTOR", "AGE"]
    assert all_ns[1].split()[:3] == ["team", "np", "app=web"]
    assert run("get", "netpol").stderr == "No resources found in default namespace.\n"
    assert run("get", "svc", "web").stdout.splitlines()[1].split()[:5] == [
        "web",
        "ClusterIP",
        "10.96.0.1",  # admitted at apply, as the API server does
        "<none>",
        "80/TCP",
    ]


def test_get_machine_readable_outputs(tmp_path: Path, store_url: str) -> None:
    run("apply", "-f", write(tmp_path, "all.yaml", MANIFEST))
    one = json.loads(run("get", "pod", "web", "-o", "json").stdout)
    assert (one["kind"], one["metadata"]["name"], one["metadata"]["namespace"]) == (
        "Pod",
        "web",
        "default",
    )
    assert one["metadata"]["resourceVersion"] == "3"  # after the service ledger and the Namespace
    many = json.loads(run("get", "ns", "-o", "json").stdout)
    assert many["kind"] == "List"
    assert [i["metadata"]["name"] for i in many["items"]] == ["team"]
    as_yaml = yaml.safe_load(run("get", "svc", "-o", "yaml").stdout)
    assert as_yaml["items"][0]["spec"]["ports"] == [{"port": 80, "targetPort": 8080}]
    assert run("get", "netpol", "-A", "-o", "name").stdout == "networkpolicy.networking.k8s.io/np\n"


def test_get_errors(store_url: str) -> None:
    result = run("get", "pods", "nope")
    assert (result.exit_code, result.stderr) == (1, 'error: pods "nope" not found\n')
    result = run("get", "bogus")
    assert result.exit_code == 1
    assert 'error: the server doesn\'t have a resource type "bogus"' in result.stderr


def test_delete_by_name_and_by_file(tmp_path: Path, store_url: str) -> None:
    path = write(tmp_path, "all.yaml", MANIFEST)
    run("apply", "-f", path)
    result = run("delete", "po", "web", "ghost")
    assert result.exit_code == 1
    assert result.stdout == 'pod "web" deleted\n'
    assert result.stderr == 'error: pods "ghost" not found\n'
    assert stored(store_url, "Pod") == []
    result = run("delete", "-f", path, "--ignore-not-found")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        'namespace "team" deleted',
        'service "web" deleted',
        'networkpolicy "np" deleted',
    ]
    assert stored(store_url, "Service") == []


def test_without_store_or_lab_says_to_run_lab_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYLIUM_STORE", raising=False)
    monkeypatch.setattr(paths, "RUN_ROOT", tmp_path)
    result = run("--lab", "missing", "get", "pods")
    assert result.exit_code == 1
    assert result.stderr.startswith('error: no lab "missing" is running')
    assert "run `pylium lab up` first" in result.stderr


def test_store_comes_from_the_lab_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYLIUM_STORE", raising=False)
    monkeypatch.setattr(paths, "RUN_ROOT", tmp_path)
    lab_dir = paths.lab_dir("demo")
    lab_dir.mkdir(parents=True)
    url = f"sqlite://{lab_dir}/store.db"
    (lab_dir / "lab.json").write_text(json.dumps({"store": url}))
    result = run("--lab", "demo", "apply", "-f", "-", input=MANIFEST)
    assert result.exit_code == 0, result.output
    assert [p["metadata"]["name"] for p in stored(url, "Pod")] == ["web"]


SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: lb}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 443, targetPort: 8443}]
---
apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata: {name: pool}
spec:
  blocks: [{cidr: 198.51.100.0/24}]
"""


def test_apply_admits_services_and_delete_frees_their_addresses(
    tmp_path: Path, store_url: str
) -> None:
    """A Service gets a ClusterIP and NodePorts at apply; a ClusterIP another service holds is
    refused with nothing stored; delete frees the address for the next service."""
    path = write(tmp_path, "svc.yaml", SERVICES)
    assert run("apply", "-f", path).exit_code == 0
    (svc,) = stored(store_url, "Service")
    assert svc["spec"]["clusterIP"] == "10.96.0.1"
    assert 30000 <= svc["spec"]["ports"][0]["nodePort"] <= 32767
    assert run("apply", "-f", path).stdout.splitlines()[0] == "service/lb unchanged"
    lines = run("get", "svc").stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    port = svc["spec"]["ports"][0]["nodePort"]
    assert lines[1].split()[:5] == [
        "lb",
        "LoadBalancer",
        "10.96.0.1",
        "<pending>",
        f"443:{port}/TCP",
    ]
    pools = run("get", "ciliumloadbalancerippools").stdout.splitlines()
    assert [line.split()[:3] for line in pools] == [
        ["NAME", "DISABLED", "BLOCKS"],
        ["pool", "false", "198.51.100.0/24"],
    ]

    taken = (
        SERVICES.split("---")[0]
        .replace("name: lb", "name: other")
        .replace("spec:\n", "spec:\n  clusterIP: 10.96.0.1\n")
    )
    result = run("apply", "-f", write(tmp_path, "taken.yaml", taken))
    assert result.exit_code == 1
    assert "spec.clusterIPs" in result.stderr and "already allocated" in result.stderr
    assert [s["metadata"]["name"] for s in stored(store_url, "Service")] == ["lb"]

    assert run("delete", "svc", "lb").exit_code == 0
    assert run("apply", "-f", write(tmp_path, "taken.yaml", taken)).exit_code == 0
    assert stored(store_url, "Service")[0]["spec"]["clusterIP"] == "10.96.0.1"


def test_get_endpointslices_columns(tmp_path: Path, store_url: str) -> None:
    """ADDRESSTYPE, the ports, and at most three addresses then "+ N more..." (kubectl)."""
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-abc"},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [f"10.244.1.{i}"]} for i in range(2, 7)],
    }
    assert run("apply", "-f", write(tmp_path, "eps.json", json.dumps(slice_))).exit_code == 0
    lines = run("get", "endpointslices").stdout.splitlines()
    assert lines[0].split() == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    assert lines[1].split()[:7] == [
        "web-abc", "IPv4", "8080", "10.244.1.2,10.244.1.3,10.244.1.4", "+", "2", "more...",
    ]  # fmt: skip


def test_get_services_wide_shows_frontends_and_backends_with_their_state(
    tmp_path: Path, store_url: str
) -> None:
    """-o wide appends every frontend (NodePort as *:PORT) and each backend's state, from the
    EndpointSlice conditions: ready = active, serving+terminating = terminating."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.96.0.7",
            "externalIPs": ["192.0.2.9"],
            "selector": {"app": "web"},
            "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}],
        },
    }
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.244.1.2"], "conditions": {"ready": True}},
            {
                "addresses": ["10.244.2.3"],
                "conditions": {"ready": False, "serving": True, "terminating": True},
            },
        ],
    }
    docs = json.dumps(service) + "\n---\n" + json.dumps(slice_)
    assert run("apply", "-f", write(tmp_path, "svc.yaml", docs)).exit_code == 0
    lines = run("get", "svc", "web", "-o", "wide").stdout.splitlines()
    assert lines[0].split()[-3:] == ["SELECTOR", "FRONTENDS", "BACKENDS"]
    frontends, backends = lines[1].split()[-2:]
    assert frontends == "10.96.0.7:80/TCP,192.0.2.9:80/TCP,*:30080/TCP"
    assert backends == "10.244.1.2:8080/TCP(active),10.244.2.3:8080/TCP(terminating)"
    assert "FRONTENDS" not in run("get", "svc", "web").stdout
