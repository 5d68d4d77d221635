"""Socket LB switched off (`--bpf-lb-sock false`) on a node where it ran: `remove_sock_lb` takes
the programs off the cgroup and removes the link pins, while the LB maps, which the uplink's
per-packet paths still read, keep their entries and `SockLB.open_maps` finds them again.
Everything is test-owned: cgroup and pins `.../pylium/pp-<random>`."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pylium.datapath.socklb import HOOKS, SockLB, link_pin, remove_sock_lb
from pylium.paths import BPFFS_ROOT, CGROUP_ROOT

pytestmark = pytest.mark.root

BACKEND_KEY = b"\x07\x00\x00\x00"


@pytest.fixture
def cgroup_and_pins() -> Iterator[tuple[Path, Path]]:
    tag = f"pp-{secrets.token_hex(4)}"
    cgroup, pins = CGROUP_ROOT / tag, BPFFS_ROOT / tag
    cgroup.mkdir(parents=True)
    try:
        yield cgroup, pins
    finally:
        shutil.rmtree(pins, ignore_errors=True)  # unpinning the links detaches them
        cgroup.rmdir()


def attached(cgroup: Path) -> list[str]:
    """Attach types of the programs on the cgroup itself (bpftool)."""
    out = subprocess.run(["bpftool", "-j", "cgroup", "show", str(cgroup)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return sorted(p["attach_type"] for p in json.loads(out.strip() or "[]"))


def test_switching_socket_lb_off_detaches_it_and_keeps_the_maps(
    cgroup_and_pins: tuple[Path, Path],
) -> None:
    cgroup, pins = cgroup_and_pins
    with SockLB.load(pins, cgroup) as sock:
        sock.prune({"backends": {BACKEND_KEY: bytes(12)}})
    assert len(attached(cgroup)) == len(HOOKS)  # closing keeps the pinned links attached

    remove_sock_lb(pins)
    assert attached(cgroup) == []
    assert not any(link_pin(pins, hook).exists() for hook in HOOKS)
    with SockLB.open_maps(pins) as maps:
        assert maps.links == {}
        assert BACKEND_KEY in maps.contents()["backends"]
    remove_sock_lb(pins)  # nothing left to remove is success
