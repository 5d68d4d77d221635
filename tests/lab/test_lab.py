"""End to end in one real lab: pods started by the lab kubelet through the real CNI chain,
talking over TCP and UDP, exec, deletion, agent and kubelet restarts."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pylium.agent.client import AgentClient
from pylium.lab import daemons, netns, process, record
from tests.lab.conftest import apply, pylium, running_pod, server_pod, store_get
from tests.support import wait_for

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def servers(lab: str) -> dict[str, str]:
    """web-1 and web-2 running; name -> pod IP."""
    apply(lab, server_pod("web-1"), server_pod("web-2"))
    return {n: running_pod(lab, n)["status"]["podIP"] for n in ("web-1", "web-2")}


def _pod_cidr(lab: str) -> str:
    """The node's pod CIDR, as the operator wrote it into its CiliumNode."""
    cn = store_get(lab, "CiliumNode", record.node_name(lab, 1)) or {}
    (cidr,) = cn["spec"]["ipam"]["podCIDRs"]
    return str(cidr)


def _ipam_used(lab: str) -> dict[str, object]:
    cn = store_get(lab, "CiliumNode", record.node_name(lab, 1)) or {}
    used: dict[str, object] = ((cn.get("status") or {}).get("ipam") or {}).get("used") or {}
    return used


def test_status_json_lists_the_node(lab: str) -> None:
    report = json.loads(pylium("--lab", lab, "lab", "status", "-o", "json").stdout)
    (node,) = report["nodes"]
    name = f"{lab}-node1"
    assert node["name"] == name
    assert node["netns"] == f"pyl-{lab}-node1" and netns.exists(node["netns"])
    assert node["agentSocket"] == f"/var/run/pylium/{name}/agent.sock"
    assert node["cniConfDir"] == f"/var/run/pylium/{name}/cni/net.d"
    assert node["cniBinDir"] == f"/var/run/pylium/{name}/cni/bin"
    assert ipaddress.IPv4Network(node["podCIDR"]).subnet_of(ipaddress.IPv4Network("10.244.0.0/16"))
    assert node["podCIDR"] == _pod_cidr(lab)
    assert node["health"] == "ok" and node["kubeletRunning"] is True
    flows = node["flows"]  # the observer's counters: losses are shown, never silent
    assert int(flows["seen_flows"]) >= 0 and isinstance(flows["lost_events"], dict)
    conflist = json.loads(Path(node["cniConfDir"], "05-pylium.conflist").read_text())
    assert [p["type"] for p in conflist["plugins"]] == ["pylium-cni", "portmap"]
    assert conflist["plugins"][0]["agentSocket"] == node["agentSocket"]
    for plugin in ("pylium-cni", "loopback", "portmap"):
        assert os.access(f"{node['cniBinDir']}/{plugin}", os.X_OK)


def test_up_on_an_existing_lab_refuses(lab: str) -> None:
    proc = pylium("lab", "up", "--name", lab, check=False)
    assert proc.returncode != 0
    assert "lab down" in proc.stderr


def test_pods_run_with_ips_from_the_node_cidr(lab: str, servers: dict[str, str]) -> None:
    for name, ip in servers.items():
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(_pod_cidr(lab)), name
        pod = store_get(lab, "Pod", name, "default") or {}
        assert pod["spec"]["nodeName"] == f"{lab}-node1"
        assert {"type": "Ready", "status": "True"} in pod["status"]["conditions"]
    assert len(set(servers.values())) == 2


@pytest.mark.parametrize(("dest", "port", "protocol"), [("web-2", 80, "tcp"), ("web-2", 53, "udp")])
def test_pod_to_pod_probe_answers_with_the_pod_name(
    lab: str, servers: dict[str, str], dest: str, port: int, protocol: str
) -> None:
    out = pylium(
        "--lab", lab, "probe", "web-1", f"{dest}:{port}", "--protocol", protocol, "-o", "json"
    ).stdout
    result = json.loads(out)
    assert result["ok"] is True
    assert result["answer"] == dest
    assert result["destination"] == servers[dest]


def test_probe_by_ip_and_failures(lab: str, servers: dict[str, str]) -> None:
    ok = pylium("--lab", lab, "probe", "web-2", f"{servers['web-1']}:80")
    assert ok.stdout.strip() == "web-1"
    refused = pylium("--lab", lab, "probe", "web-2", "web-1:81", check=False)
    assert refused.returncode == 1 and "refused" in refused.stderr
    silent = pylium(
        "--lab", lab, "probe", "web-2", "web-1:54", "--protocol", "udp", "-o", "json", check=False
    )
    assert silent.returncode == 1 and json.loads(silent.stdout)["reason"] == "refused"


def test_exec_runs_in_the_pod_netns_and_passes_the_exit_code(
    lab: str, servers: dict[str, str]
) -> None:
    out = pylium("--lab", lab, "exec", "web-1", "--", "ip", "-4", "-o", "addr", "show", "eth0")
    assert f"inet {servers['web-1']}/32" in out.stdout
    assert (
        pylium("--lab", lab, "exec", "web-1", "--", "sh", "-c", "exit 3", check=False).returncode
        == 3
    )
    cgroups = pylium("--lab", lab, "exec", "web-1", "--", "cat", "/proc/self/cgroup").stdout
    assert f"/pylium/{lab}/{lab}-node1" in cgroups


def test_a_pod_command_runs_in_its_sandbox(lab: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "cmd", "namespace": "default"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "command": ["sh", "-c"],
                    "args": ["ip -4 -o addr show eth0 > /tmp/$0.addr; exec sleep infinity", lab],
                }
            ]
        },
    }
    apply(lab, pod)
    ip = running_pod(lab, "cmd")["status"]["podIP"]
    out = wait_for(lambda: _read(f"/tmp/{lab}.addr"), timeout=10)
    os.unlink(f"/tmp/{lab}.addr")
    assert f"inet {ip}/32" in out


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text() or None
    except FileNotFoundError:
        return None


def test_deleting_a_pod_removes_netns_veth_and_frees_its_ip(lab: str) -> None:
    apply(lab, server_pod("gone"))
    pod = running_pod(lab, "gone")
    ip, ns = pod["status"]["podIP"], pod["metadata"]["annotations"]["pylium.io/netns"]
    node_ns = f"pyl-{lab}-node1"
    routes = subprocess.run(["ip", "-n", node_ns, "route"], capture_output=True, text=True).stdout
    assert ip in routes and netns.exists(ns)
    wait_for(lambda: ip in _ipam_used(lab), timeout=10)
    pylium("--lab", lab, "delete", "pod", "gone")
    wait_for(lambda: not netns.exists(ns), timeout=15)
    wait_for(lambda: ip not in _ipam_used(lab), timeout=10)
    routes = subprocess.run(["ip", "-n", node_ns, "route"], capture_output=True, text=True).stdout
    assert ip not in routes
    socket = f"/var/run/pylium/{lab}-node1/agent.sock"
    endpoints = AgentClient(socket).endpoints()
    assert ip not in [e["ipv4"] for e in endpoints]
    host_ifs = {e["hostIfname"] for e in endpoints}

    def lxc_links() -> set[str]:
        out = subprocess.run(["ip", "-n", node_ns, "-o", "link"], capture_output=True, text=True)
        names = {line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()}
        return {name for name in names if name.startswith("lxc")}

    # the agent deletes a DEL'd veth pair just after DEL returns
    wait_for(lambda: lxc_links() == host_ifs, timeout=10)


def test_agent_killed_and_restarted_keeps_pods_and_allocations(
    lab: str, servers: dict[str, str]
) -> None:
    rec = record.load(lab)
    assert rec is not None
    node = rec.nodes[0]
    used_before = {ip for ip in _ipam_used(lab) if ip in servers.values()}
    os.kill(node.agentPid or 0, signal.SIGKILL)
    wait_for(lambda: not process.alive(node.agentPid), timeout=5)
    # The datapath is in the kernel: pods still talk while the agent is away.
    assert pylium("--lab", lab, "probe", "web-1", "web-2:80").stdout.strip() == "web-2"
    # An ADD while the agent is away fails, is reported, and is retried once it is back.
    apply(lab, server_pod("late"))
    wait_for(
        lambda: ((store_get(lab, "Pod", "late", "default") or {}).get("status") or {}).get(
            "message"
        ),
        timeout=15,
    )
    pylium("--lab", lab, "lab", "restart", "agent")
    late_ip = running_pod(lab, "late")["status"]["podIP"]
    assert late_ip not in servers.values()
    assert used_before == set(servers.values())
    assert set(servers.values()) <= set(_ipam_used(lab))
    assert pylium("--lab", lab, "probe", "late", "web-1:80").stdout.strip() == "web-1"
    pylium("--lab", lab, "delete", "pod", "late")


def test_kubelet_restart_adopts_running_pods_and_cleans_deleted_ones(
    lab: str, servers: dict[str, str]
) -> None:
    rec = record.load(lab)
    assert rec is not None
    node = rec.nodes[0]
    apply(lab, server_pod("doomed"))
    doomed_ns = running_pod(lab, "doomed")["metadata"]["annotations"]["pylium.io/netns"]
    web1_ns = record.pod_netns(lab, "default", "web-1")
    pids_before = set(_pids_in(web1_ns))
    assert pids_before
    process.stop(node.kubeletPid, daemons.is_kubelet_of(node.name))
    assert netns.exists(doomed_ns) and set(_pids_in(web1_ns)) == pids_before  # SIGTERM: no DEL
    assert _node_ready(lab) == "False"
    pylium("--lab", lab, "delete", "pod", "doomed")
    pylium("--lab", lab, "lab", "restart", "kubelet")
    wait_for(lambda: _node_ready(lab) == "True", timeout=10)
    wait_for(lambda: not netns.exists(doomed_ns), timeout=15)
    assert set(_pids_in(web1_ns)) == pids_before
    assert pylium("--lab", lab, "probe", "web-2", "web-1:80").stdout.strip() == "web-1"


def _node_ready(lab: str) -> str | None:
    """The status of the node's Ready condition, which its kubelet reports."""
    node = store_get(lab, "Node", record.node_name(lab, 1)) or {}
    conditions = (node.get("status") or {}).get("conditions") or []
    return next((str(c["status"]) for c in conditions if c["type"] == "Ready"), None)


def _pids_in(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_dead_container_is_restarted(lab: str, servers: dict[str, str]) -> None:
    ns = record.pod_netns(lab, "default", "web-2")
    (pid,) = _pids_in(ns)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: [p for p in _pids_in(ns) if p != pid], timeout=10)
    probe = ["--lab", lab, "probe", "web-1", "web-2:80"]
    wait_for(lambda: pylium(*probe, check=False).stdout.strip() == "web-2", timeout=10)
    # The kubelet may first write the restart (not ready yet), then the ready container: wait
    # for the final state rather than asserting on whichever status is read first.
    (container,) = wait_for(
        lambda: _ready_and_running(_container_statuses(lab, "web-2", restarts=1)), timeout=10
    )
    assert container["ready"] is True and container["state"] == {"running": {}}


def _ready_and_running(found: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    ready = found and all(c["ready"] is True and c["state"] == {"running": {}} for c in found)
    return found if ready else None


def _container_statuses(lab: str, pod: str, restarts: int) -> list[dict[str, Any]] | None:
    status = (store_get(lab, "Pod", pod, "default") or {}).get("status") or {}
    found: list[dict[str, Any]] = status.get("containerStatuses") or []
    return found if [c["restartCount"] for c in found] == [restarts] else None


@pytest.mark.parametrize(("code", "phase"), [(0, "Succeeded"), (3, "Failed")])
def test_a_finished_container_of_a_never_restarted_pod_ends_the_pod(
    lab: str, code: int, phase: str
) -> None:
    name = f"once-{code}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "x", "command": ["sh", "-c", f"exit {code}"]}],
        },
    }
    apply(lab, pod)

    def ended() -> dict[str, Any] | None:
        status = (store_get(lab, "Pod", name, "default") or {}).get("status") or {}
        return status if status.get("phase") == phase else None

    status = wait_for(ended, timeout=15, interval=0.1)
    (container,) = status["containerStatuses"]
    assert container["state"] == {"terminated": {"exitCode": code}}
    assert container["restartCount"] == 0
    pylium("--lab", lab, "delete", "pod", name)


def test_a_crashing_container_is_restarted_with_backoff(lab: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "crashy", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "x", "command": ["sh", "-c", "exit 1"]}]},
    }
    apply(lab, pod)

    def backing_off() -> dict[str, Any] | None:
        status = (store_get(lab, "Pod", "crashy", "default") or {}).get("status") or {}
        (c,) = status.get("containerStatuses") or [{}]
        waiting = c.get("state", {}).get("waiting", {})
        return (
            c
            if c.get("restartCount", 0) >= 2 and waiting.get("reason") == "CrashLoopBackOff"
            else None
        )

    container = wait_for(backing_off, timeout=15, interval=0.1)
    assert container["ready"] is False
    pylium("--lab", lab, "delete", "pod", "crashy")


def test_a_service_gets_its_cluster_ip_at_apply_and_a_slice_of_its_pods(lab: str) -> None:
    """As the API server and the EndpointSlice controller do: the ClusterIP is in the stored
    Service at once, and `get endpointslices` lists the selected pods' addresses."""
    pods = [server_pod(n) for n in ("svc-a", "svc-b")]
    for p in pods:
        p["metadata"]["labels"] = {"app": "svc"}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "svc", "namespace": "default"},
        "spec": {"selector": {"app": "svc"}, "ports": [{"port": 8080, "targetPort": 80}]},
    }
    apply(lab, *pods, service)
    cluster_ip = (store_get(lab, "Service", "svc", "default") or {})["spec"]["clusterIP"]
    assert ipaddress.IPv4Address(cluster_ip) in ipaddress.IPv4Network(record.SERVICE_CIDR)
    ips = sorted(running_pod(lab, n)["status"]["podIP"] for n in ("svc-a", "svc-b"))

    def listed() -> list[str] | None:
        lines = pylium("--lab", lab, "get", "endpointslices").stdout.splitlines()
        rows = [line.split() for line in lines[1:] if line.startswith("svc-")]
        return rows[0] if rows and sorted(rows[0][3].split(",")) == ips else None

    row = wait_for(listed, timeout=15, interval=0.2)
    assert row[1:3] == ["IPv4", "80"]
    lines = pylium("--lab", lab, "get", "svc", "svc").stdout.splitlines()
    assert lines[1].split()[:5] == ["svc", "ClusterIP", cluster_ip, "<none>", "8080/TCP"]
