"""A real runtime: podman 4.3 (CNI backend) runs two containers on a pylium network.

podman runs inside the node netns where the agent runs (nothing touches the root netns), with
its own storage, containers.conf and CNI directories in a temp dir, and a busybox-static
rootfs as the container. The containers talk over TCP (busybox nc) and UDP (busybox-static's
nc has no -u, so UDP is busybox traceroute's probes, answered by the peer's kernel with port
unreachable); stopping them makes podman call DEL, after which no veth, address or endpoint is
left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import wait_for

from .harness import REFERENCE_PLUGINS, VENV_BIN, CniHarness

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed"),
]

BUSYBOX = Path("/bin/busybox")
LIBCNI_CACHE = Path("/var/lib/cni")
# Each container serves TCP 9000, answering with its name.
SERVER = "while true; do echo tcp-$NAME | nc -l -p 9000; done"


class Podman:
    """podman with private storage and config, run inside the node netns."""

    def __init__(self, cni: CniHarness, workdir: Path) -> None:
        self.cni = cni
        self.workdir = workdir
        self.rootfs = workdir / "rootfs"
        plugins = workdir / "cni-bin"
        netconf = workdir / "cni-conf"
        for path in (self.rootfs / "bin", self.rootfs / "etc", self.rootfs / "tmp", plugins):
            path.mkdir(parents=True)
        shutil.copy(BUSYBOX, self.rootfs / "bin" / "busybox")
        subprocess.run(
            [str(self.rootfs / "bin/busybox"), "--install", "-s", str(self.rootfs / "bin")],
            check=True,
        )
        # --install -s links to the host path of busybox; point them at /bin/busybox inside.
        for link in (self.rootfs / "bin").iterdir():
            if link.is_symlink():
                link.unlink()
                link.symlink_to("/bin/busybox")
        (self.rootfs / "etc/passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
        (self.rootfs / "etc/group").write_text("root:x:0:\n")
        (plugins / "pylium-cni").symlink_to(VENV_BIN / "pylium-cni")
        for name in ("loopback", "portmap"):
            (plugins / name).symlink_to(REFERENCE_PLUGINS / name)
        netconf.mkdir()
        conflist = {
            "cniVersion": "0.4.0",
            "name": "pylium",
            "plugins": [
                cni.plugin(),
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (netconf / "pylium.conflist").write_text(json.dumps(conflist))
        self.conf = workdir / "containers.conf"
        self.conf.write_text(
            "[network]\n"
            'network_backend = "cni"\n'
            f'cni_plugin_dirs = ["{plugins}"]\n'
            f'network_config_dir = "{netconf}"\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{workdir / "events.log"}"\n'
            f'tmp_dir = "{workdir / "tmp"}"\n'
        )

    def __call__(self, *args: str, check: bool = True) -> str:
        env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        command = [
            *self.cni.node.exec_prefix(),
            "podman",
            "--root",
            str(self.workdir / "storage"),
            "--runroot",
            str(self.workdir / "runroot"),
            "--runtime",
            "runc",
            *args,
        ]
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {proc.stderr}")
        return proc.stdout.strip()

    def run(self, name: str) -> str:
        """Start a detached container running SERVER; returns its ID."""
        return self(
            "run",
            "-d",
            "--rm",
            "--name",
            name,
            "--network",
            "pylium",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--env",
            f"NAME={name}",
            "--rootfs",
            str(self.rootfs),
            "sh",
            "-c",
            SERVER,
        )

    def ip(self, name: str) -> str:
        return self("inspect", name, "--format", "{{.NetworkSettings.Networks.pylium.IPAddress}}")


@pytest.fixture
def podman(node_harness: CniHarness) -> Iterator[Podman]:
    # podman refuses a runroot path longer than 50 characters: pytest's tmp_path is too long
    workdir = Path(tempfile.mkdtemp(prefix="pyl-tc-podman-"))
    made_cache = not LIBCNI_CACHE.exists()
    try:
        pm = Podman(node_harness, workdir)
        try:
            yield pm
        finally:
            pm("rm", "-f", "-t", "0", "--all", check=False)
            pm("system", "reset", "--force", check=False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if made_cache:  # libcni's result cache, if this test created it and it is empty
            for directory in (LIBCNI_CACHE / "results", LIBCNI_CACHE):
                with contextlib.suppress(OSError):
                    directory.rmdir()


def test_two_containers_talk_and_del_cleans_up(podman: Podman, node_harness: CniHarness):
    cni = node_harness
    names = ("pyl-tc-a", "pyl-tc-b")
    for name in names:
        podman.run(name)
    ips = {name: podman.ip(name) for name in names}
    assert len(set(ips.values())) == 2
    endpoints = cni.node.agent.endpoints()
    assert {ep["ipv4"] for ep in endpoints} == set(ips.values())
    assert {ep["podName"] for ep in endpoints} == set(names)  # podman's K8S_POD_NAME
    assert len(cni.host_veths()) == 2
    for src, dst in (names, names[::-1]):
        # TCP both ways: the peer's server answers with its name
        reply = wait_for(
            lambda s=src, d=dst: podman("exec", s, "nc", "-w", "2", ips[d], "9000", check=False)
        )
        assert reply == f"tcp-{dst}"
        # UDP both ways: probes to a closed port reach the peer, whose ICMP ends the trace
        trace = podman(
            "exec", src, "traceroute", "-n", "-q", "1", "-w", "2", "-m", "4", "-p", "9001", ips[dst]
        )
        assert trace.splitlines()[-1].split()[1] == ips[dst], trace
    podman("stop", "-t", "0", *names)
    wait_for(lambda: not podman("ps", "-a", "-q"))
    assert cni.node.agent.endpoints() == []
    assert cni.host_veths() == set()
