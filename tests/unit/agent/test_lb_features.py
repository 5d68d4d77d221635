"""Cilium's per-feature switches of the eBPF service paths (`--bpf-lb-sock`,
`--enable-node-port`, `--enable-external-ips`): each follows `--kube-proxy-replacement` unless
set, any may run beside kube-proxy's rules (a partial replacement), the replacement without
socket LB is refused, and the lab passes the switches to every agent."""

from __future__ import annotations

import pytest

from pylium.agent.lbfeatures import LBFeatures, lb_features
from pylium.agent.main import parse_args
from pylium.lab import daemons
from pylium.lab.record import LabRecord
from pylium.loadbalancer.kubeproxy.iptables import restore_input
from pylium.loadbalancer.kubeproxy.params import ProxyParams

BASE = ["--node", "n1", "--store", "sqlite:////tmp/unused.db"]
KPR = ["--kube-proxy-replacement", "true", "--cgroup", "/sys/fs/cgroup/unified/x"]
KUBE_PROXY = ["--kube-proxy-replacement", "false", "--kube-proxy-mode", "iptables"]


def features(argv: list[str]) -> LBFeatures:
    p = parse_args([*BASE, *argv])
    return lb_features(p.kube_proxy_replacement, p.sock_lb, p.node_port, p.external_ips, p.cgroup)


def test_that_every_feature_follows_the_replacement_by_default():
    assert features(KPR) == LBFeatures(sock_lb=True, node_port=True, external_ips=True)
    assert features(KUBE_PROXY) == LBFeatures(sock_lb=False, node_port=False, external_ips=False)
    assert not features(KUBE_PROXY).lb_maps


def test_that_socket_lb_runs_beside_kube_proxy_rules_when_asked():
    f = features([*KUBE_PROXY, "--bpf-lb-sock", "true", "--cgroup", "/sys/fs/cgroup/unified/x"])
    assert f == LBFeatures(sock_lb=True, node_port=False, external_ips=False)
    assert parse_args([*BASE, *KUBE_PROXY]).kube_proxy_mode is not None


def test_that_node_port_alone_beside_kube_proxy_still_fills_the_lb_maps():
    f = features([*KUBE_PROXY, "--enable-node-port", "true"])
    assert f == LBFeatures(sock_lb=False, node_port=True, external_ips=False)
    assert f.lb_maps


def test_that_one_uplink_feature_can_be_turned_off_in_the_replacement():
    f = features([*KPR, "--enable-external-ips", "false"])
    assert f == LBFeatures(sock_lb=True, node_port=True, external_ips=False)


def test_that_the_replacement_without_socket_lb_is_refused_naming_the_flags(capsys):
    with pytest.raises(SystemExit):
        parse_args([*BASE, *KPR, "--bpf-lb-sock", "false"])
    err = capsys.readouterr().err
    assert "--kube-proxy-replacement true needs --bpf-lb-sock true" in err
    assert "--kube-proxy-replacement false" in err  # what to use instead


def test_that_socket_lb_without_a_cgroup_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args([*BASE, *KUBE_PROXY, "--bpf-lb-sock", "true"])
    assert "--cgroup" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--cgroup"):
        lb_features(True, None, None, None, None)


def test_that_the_lab_passes_the_switches_and_the_cgroup_to_every_agent():
    lab = LabRecord.new("pp0", 2)
    lab.kubeProxyReplacement, lab.bpfLbSock, lab.enableNodePort = False, True, False
    for node in lab.nodes:
        argv = daemons.agent_argv(lab, node)
        assert "--bpf-lb-sock=true" in argv and "--enable-node-port=false" in argv
        assert not any(a.startswith("--enable-external-ips") for a in argv)
        assert argv[argv.index("--cgroup") + 1] == node.cgroup
        assert argv[argv.index("--kube-proxy-mode") + 1] == "iptables"
    assert LabRecord.from_json(lab.to_json()).bpfLbSock is True  # restarts keep them


def test_that_a_kube_proxy_lab_without_socket_lb_gives_no_cgroup():
    lab = LabRecord.new("pp0", 1)
    lab.kubeProxyReplacement = False
    assert "--cgroup" not in daemons.agent_argv(lab, lab.nodes[0])


def test_that_liberal_conntrack_drops_no_invalid_packets_in_iptables_mode():
    """The eBPF NodePort path beside kube-proxy: a backend's reply to a flow the uplink
    forwarded past conntrack is INVALID there, and must not be dropped."""
    invalid = "--ctstate INVALID -j DROP"
    assert invalid in restore_input([], ProxyParams("n1"))
    assert invalid not in restore_input([], ProxyParams("n1", conntrack_tcp_be_liberal=True))
