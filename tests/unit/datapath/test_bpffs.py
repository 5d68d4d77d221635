"""The agent refuses a pin directory that is not on bpffs, naming the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from pylium.datapath.bpffs import BPF_FS_MAGIC, BpffsMissing, fs_type, require_bpffs


def test_a_pin_dir_outside_bpffs_is_refused_with_the_mount_command(tmp_path):
    assert fs_type(tmp_path) != BPF_FS_MAGIC
    with pytest.raises(BpffsMissing, match="mount -t bpf bpf /sys/fs/bpf"):
        require_bpffs(tmp_path / "not" / "yet" / "made")


def test_statfs_of_a_missing_path_raises():
    with pytest.raises(FileNotFoundError):
        fs_type(Path("/nonexistent/pylium"))
