"""`lab down` removes the shared `pylium` cgroup and bpffs parents with the last lab only."""

from __future__ import annotations

from pathlib import Path

import pytest

from pylium import paths
from pylium.lab import down


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """RUN_ROOT, CGROUP_ROOT and BPFFS_ROOT in a temporary directory (plain directories stand
    in for cgroupfs and bpffs: rmdir behaves the same on an empty one)."""
    monkeypatch.setattr(paths, "RUN_ROOT", tmp_path / "run")
    monkeypatch.setattr(paths, "CGROUP_ROOT", tmp_path / "cgroup" / "pylium")
    monkeypatch.setattr(paths, "BPFFS_ROOT", tmp_path / "bpf" / "pylium")
    return paths.CGROUP_ROOT, paths.BPFFS_ROOT


def leftover_lab(name: str) -> None:
    """What a lab whose record is gone leaves: its lab dir and its cgroup subtree."""
    paths.lab_dir(name).mkdir(parents=True)
    (paths.CGROUP_ROOT / name).mkdir(parents=True)
    paths.BPFFS_ROOT.mkdir(parents=True, exist_ok=True)


def test_the_last_lab_takes_the_shared_parents(roots: tuple[Path, Path]) -> None:
    cgroup_root, bpffs_root = roots
    leftover_lab("twdown1")
    assert down.down("twdown1", force=True, progress=lambda _: None)
    assert not cgroup_root.exists() and not bpffs_root.exists()


def test_another_labs_subtrees_keep_the_parents(roots: tuple[Path, Path]) -> None:
    cgroup_root, bpffs_root = roots
    leftover_lab("twdown1")
    (cgroup_root / "twdown2").mkdir()
    (bpffs_root / "twdown2-node1").mkdir()
    assert down.down("twdown1", force=True, progress=lambda _: None)
    assert sorted(p.name for p in cgroup_root.iterdir()) == ["twdown2"]
    assert sorted(p.name for p in bpffs_root.iterdir()) == ["twdown2-node1"]
