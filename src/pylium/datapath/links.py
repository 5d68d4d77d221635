"""Attach programs to hooks. Every hook returns the same small `Link`.

tcx (Linux 6.6+) is the tc hook: `bpf_link_create(prog, ifindex, BPF_TCX_INGRESS|EGRESS)`
(libbpf 1.1 has no `bpf_program__attach_tcx`). A pinned link keeps the program attached after
the agent exits; `Link.from_pin` + `update` swap in a newly loaded program without a gap.
Where tcx is missing, `attach_tc` installs a clsact qdisc and a direct-action tc filter.
Attach calls act in the calling thread's network namespace.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import subprocess
from dataclasses import dataclass
from enum import Enum, IntEnum
from pathlib import Path

from pylium.datapath import libbpf
from pylium.datapath.closing import Closing
from pylium.datapath.errors import BpfError, NotSupported
from pylium.datapath.loader import Program
from pylium.paths import NETNS_DIR

log = logging.getLogger(__name__)


class AttachType(IntEnum):
    """enum bpf_attach_type values pylium uses (Debian's 6.1 headers lack the tcx ones)."""

    CGROUP_INET4_CONNECT = 10
    CGROUP_UDP4_SENDMSG = 14
    CGROUP_UDP4_RECVMSG = 19
    CGROUP_INET4_GETPEERNAME = 29
    XDP = 37
    TCX_INGRESS = 46
    TCX_EGRESS = 47


class ProgType(IntEnum):
    """enum bpf_prog_type values pylium attaches."""

    SCHED_CLS = 3
    XDP = 6
    CGROUP_SOCK_ADDR = 18


class Direction(Enum):
    """Which side of a device a tc program sees: packets received or sent by it."""

    INGRESS = "ingress"
    EGRESS = "egress"


class _BpfLinkInfo(ctypes.Structure):
    # The head of struct bpf_link_info plus room for its union (kernel fills what fits).
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("union", ctypes.c_uint64 * 6),
    ]


LINK_TYPE_TCX = 11
"""enum bpf_link_type of a tcx link."""


@dataclass(frozen=True)
class LinkInfo:
    type: int
    id: int
    prog_id: int
    ifindex: int
    """The device of a tcx link, 0 once that device is gone (the link is defunct then); 0 for
    other link types."""


class Link(Closing):
    """An owned BPF link fd. Closing an unpinned link detaches it; a pinned one stays."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pin_path: Path | None = None

    @classmethod
    def from_pin(cls, path: os.PathLike[str] | str) -> Link:
        link = cls(libbpf.obj_get(os.fspath(path)))
        link.pin_path = Path(path)
        return link

    def info(self) -> LinkInfo:
        raw = _BpfLinkInfo()
        libbpf.obj_info(self.fd, raw)
        # For tcx the union starts with {__u32 ifindex; __u32 attach_type;}.
        ifindex = raw.union[0] & 0xFFFFFFFF if raw.type == LINK_TYPE_TCX else 0
        return LinkInfo(type=raw.type, id=raw.id, prog_id=raw.prog_id, ifindex=ifindex)

    def pin(self, path: os.PathLike[str] | str) -> None:
        libbpf.obj_pin(self.fd, os.fspath(path))
        self.pin_path = Path(path)

    def unpin(self) -> None:
        if self.pin_path is not None:
            self.pin_path.unlink(missing_ok=True)
            self.pin_path = None

    def update(self, program: Program) -> None:
        """Atomically replace the attached program (e.g. after a restart reloads it)."""
        libbpf.check(libbpf.lib().bpf_link_update(self.fd, program.fd, None), "update link")

    def detach(self) -> None:
        """Detach now, even if pinned or held elsewhere; the fd stays open (defunct)."""
        libbpf.check(libbpf.lib().bpf_link_detach(self.fd), "detach link")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _link_create(program: Program, target_fd: int, attach: AttachType, what: str) -> Link:
    ret = libbpf.lib().bpf_link_create(program.fd, target_fd, int(attach), None)
    if ret < 0:
        raise BpfError(-ret, f"attach {program.name} to {what}")
    return Link(ret)


def _require(program: Program, prog_type: ProgType, hook: str) -> None:
    if program.type != prog_type:
        raise ValueError(f"{program.name} is program type {program.type}, {hook} needs {prog_type}")


def attach_tcx(ifindex: int, program: Program, direction: Direction) -> Link:
    """Attach a tc (SCHED_CLS) program to a device with a tcx link (appended last)."""
    _require(program, ProgType.SCHED_CLS, "tcx")
    if ifindex <= 0:
        raise ValueError(f"invalid ifindex {ifindex}")
    attach = AttachType.TCX_INGRESS if direction is Direction.INGRESS else AttachType.TCX_EGRESS
    ret = libbpf.lib().bpf_link_create(program.fd, ifindex, int(attach), None)
    if ret == -errno.EINVAL and not tcx_supported(program):
        raise NotSupported("tcx", "6.6", errno.EINVAL)
    if ret < 0:
        raise BpfError(-ret, f"attach tcx {direction.value} of {program.name} to ifindex {ifindex}")
    return Link(ret)


def ensure_pinned_tcx(pin: Path, ifindex: int, program: Program, direction: Direction) -> None:
    """Make `program` the one attached to `direction` of `ifindex` by the link pinned at `pin`.

    Idempotent: a pin still on that device gets the program swapped in if it differs
    (`bpf_link_update`, atomic: no packet passes without a program; the restart path); a
    defunct pin (its device was deleted) or one on another device is replaced by a new attach.
    """
    if pin.exists():
        with Link.from_pin(pin) as link:
            info = link.info()
            if info.ifindex == ifindex:
                if info.prog_id != program.id:
                    link.update(program)
                return
            log.warning("replacing link %s: its device is gone", pin)
            _detach_quietly(link)
            pin.unlink()
    with attach_tcx(ifindex, program, direction) as link:
        link.pin(pin)  # if this fails, closing the unpinned link detaches it


def remove_pinned(pin: Path) -> None:
    """Detach and unpin the link pinned at `pin`; no pin is success."""
    try:
        link = Link.from_pin(pin)
    except BpfError as err:
        if err.errno == errno.ENOENT:
            return
        raise
    with link:
        _detach_quietly(link)
    pin.unlink(missing_ok=True)


def _detach_quietly(link: Link) -> None:
    """Detach now (unpinning alone frees the link lazily); a defunct link is already off."""
    try:
        link.detach()
    except BpfError as err:
        if err.errno not in (errno.ENOLINK, errno.ENODEV, errno.ENOENT):
            raise


def tcx_programs(ifindex: int, direction: Direction, max_progs: int = 64) -> list[int]:
    """Ids of the programs attached with tcx to a device (calling thread's netns), in order."""
    attach = AttachType.TCX_INGRESS if direction is Direction.INGRESS else AttachType.TCX_EGRESS
    ids = (ctypes.c_uint32 * max_progs)()
    count = ctypes.c_uint32(max_progs)
    flags = ctypes.c_uint32()
    libbpf.check(
        libbpf.lib().bpf_prog_query(
            ifindex, int(attach), 0, ctypes.byref(flags), ids, ctypes.byref(count)
        ),
        f"query tcx {direction.value} of ifindex {ifindex}",
    )
    return list(ids[: count.value])


def tcx_supported(program: Program) -> bool:
    """Whether the kernel knows tcx, probed with a SCHED_CLS program on an absent ifindex.

    A kernel without tcx rejects the attach type with EINVAL; one with it looks the device up
    and says ENODEV.
    """
    ret: int = libbpf.lib().bpf_link_create(
        program.fd, 0x7FFFFFFF, int(AttachType.TCX_INGRESS), None
    )
    if ret >= 0:
        os.close(ret)
        return True
    return ret != -errno.EINVAL


def attach_xdp(ifindex: int, program: Program) -> Link:
    """Attach an XDP program to a device with a link (native mode if the driver has it)."""
    _require(program, ProgType.XDP, "xdp")
    return _link_create(program, ifindex, AttachType.XDP, f"xdp of ifindex {ifindex}")


def attach_cgroup(cgroup: os.PathLike[str] | str, program: Program, attach: AttachType) -> Link:
    """Attach a cgroup program (e.g. connect4) to a cgroup v2 directory. Never the root one."""
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return _link_create(program, fd, attach, f"cgroup {cgroup}")
    finally:
        os.close(fd)


@dataclass(frozen=True)
class TcFilter:
    """A clsact direct-action filter installed with `tc` (the fallback without tcx)."""

    device: str
    direction: Direction
    netns: str | None

    def _tc(self, *args: str) -> list[str]:
        # nsenter, not `tc -n`: that remounts /sys in a private mount namespace, hiding bpffs.
        enter = ["nsenter", f"--net={NETNS_DIR / self.netns}", "--"] if self.netns else []
        return [*enter, "tc", *args]

    def detach(self) -> None:
        """Remove the filter (the clsact qdisc stays: other filters may use it)."""
        _run(self._tc("filter", "del", "dev", self.device, self.direction.value))


def attach_tc(
    device: str, pinned_program: Path, direction: Direction, netns: str | None = None
) -> TcFilter:
    """Attach a pinned SCHED_CLS program with clsact + `tc filter ... bpf da`."""
    f = TcFilter(device, direction, netns)
    _run(f._tc("qdisc", "replace", "dev", device, "clsact"))  # idempotent
    _run(
        f._tc(
            "filter",
            "add",
            "dev",
            device,
            direction.value,
            "bpf",
            "direct-action",
            "object-pinned",
            str(pinned_program),
        )
    )
    return f


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise BpfError(errno.EINVAL, f"{' '.join(argv)}: {done.stderr.strip()}")
