"""Socket-level load balancing: `sock.o` (bpf/sock.c) on a node's cgroup, and the LB maps it
reads.

`SockLB.load(pin_dir, cgroup)` loads the four cgroup programs (connect4, sendmsg4, recvmsg4,
getpeername4) with their maps pinned by name under the node's pin directory (maps already
pinned there are re-used, so a restart keeps the services), and attaches them to the cgroup
with links pinned as `<pin_dir>/socklb/<hook>` (not under `links/`: the endpoint reconciler
prunes that directory). On restart a pinned link gets the freshly loaded program swapped in
(`bpf_link_update`, no gap); one that fails to update is replaced.

The agent writes the maps only through `apply(MapDelta)` (in the order that never leaves a
slot naming a missing backend or a service without its reverse-NAT entry) and `prune(desired)`
(the full content, e.g. `LBMaps.encoded()`: rewrites what differs, deletes what is extra).
A Maglev entry is written as Cilium does: a new one-value inner array holding the M backend
ids, whose fd replaces the outer entry in one update. Socket LB itself picks a random slot
(Cilium's bpf_sock does too); the tables serve the per-packet paths sharing these pins.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path

from pylium.datapath import libbpf
from pylium.datapath.closing import Closing
from pylium.datapath.errors import BpfError
from pylium.datapath.lbconfig import MAP_MAGLEV, LBConfig
from pylium.datapath.links import AttachType, Link, attach_cgroup, remove_pinned
from pylium.datapath.loader import OBJ_DIR, Collection, ObjectSpec
from pylium.datapath.maps import MapInfo, MapType, RawMap
from pylium.loadbalancer.lbmaps import AFFINITY_MATCH, BACKENDS, MAGLEV, REVNAT, SERVICES, MapDelta

log = logging.getLogger(__name__)

MAP_NAMES = {
    SERVICES: "pylium_lb4_services",
    BACKENDS: "pylium_lb4_backends",
    REVNAT: "pylium_lb4_reverse_nat",
    AFFINITY_MATCH: "pylium_lb_affinity_match",
    MAGLEV: MAP_MAGLEV,
}
"""The agent-owned LB maps (lbmaps name -> pinned map name)."""
MAP_REVERSE_SK = "pylium_lb4_reverse_sk"
MAP_AFFINITY = "pylium_lb4_affinity"

HOOKS = {
    "connect4": ("sock4_connect", AttachType.CGROUP_INET4_CONNECT),
    "sendmsg4": ("sock4_sendmsg", AttachType.CGROUP_UDP4_SENDMSG),
    "recvmsg4": ("sock4_recvmsg", AttachType.CGROUP_UDP4_RECVMSG),
    "getpeername4": ("sock4_getpeername", AttachType.CGROUP_INET4_GETPEERNAME),
}
LINKS_DIR = "socklb"
"""Sub-directory of the pin directory holding the cgroup links."""

_UPSERT_ORDER = (BACKENDS, REVNAT, MAGLEV, SERVICES, AFFINITY_MATCH)
"""Referenced entries before the entries that refer to them."""
_DELETE_ORDER = (AFFINITY_MATCH, SERVICES, MAGLEV, REVNAT, BACKENDS)
_ZERO = bytes(4)
"""The one key of a Maglev inner array."""

CGROUP2_ROOTS = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))


class RootCgroupRefused(ValueError):
    """Attaching to the cgroup v2 root needs an explicit `allow_root=True`."""


def link_pin(pin_dir: Path, hook: str) -> Path:
    """Where the link of one hook is pinned."""
    return pin_dir / LINKS_DIR / hook


class SockLB(Closing):
    """The loaded socket-LB programs, their maps and cgroup links; `close` keeps the pins."""

    def __init__(self, coll: Collection, links: dict[str, Link]) -> None:
        self._coll = coll
        self.links = links
        self.maps: dict[str, RawMap] = {m: coll.maps[name] for m, name in MAP_NAMES.items()}
        self.reverse_sk: RawMap = coll.maps[MAP_REVERSE_SK]

    @classmethod
    def load(
        cls,
        pin_dir: Path,
        cgroup: Path,
        obj_dir: Path = OBJ_DIR,
        allow_root: bool = False,
        services_max: int | None = None,
        lb: LBConfig | None = None,
    ) -> SockLB:
        """Load sock.o with maps pinned under `pin_dir` and attach it to `cgroup`.

        `services_max` sizes the services map (one entry per frontend plus one per backend
        slot; compiled in: 65536, too few for 30 000 services of 2 backends). `lb` sets the
        default algorithm and Maglev table size (default: `LBConfig()`)."""
        if not allow_root and Path(os.path.realpath(cgroup)) in CGROUP2_ROOTS:
            raise RootCgroupRefused(f"{cgroup} is the cgroup v2 root")
        spec = (lb or LBConfig()).apply(ObjectSpec.from_file(obj_dir / "sock.o"))
        if services_max is not None:
            spec = spec.with_max_entries(**{MAP_NAMES[SERVICES]: services_max})
        with ExitStack() as stack:
            coll = stack.enter_context(spec.load(pin_dir))
            links: dict[str, Link] = {}
            (pin_dir / LINKS_DIR).mkdir(parents=True, exist_ok=True)
            for hook, (prog_name, attach) in HOOKS.items():
                link = _attach(coll, prog_name, attach, cgroup, link_pin(pin_dir, hook))
                stack.callback(link.close)
                links[hook] = link
            stack.pop_all()
            return cls(coll, links)

    @classmethod
    def open_maps(
        cls, pin_dir: Path, obj_dir: Path = OBJ_DIR, lb: LBConfig | None = None
    ) -> SockLB:
        """The LB maps pinned under `pin_dir` with no program attached: the uplink's
        per-packet service paths read them while socket LB is off (`--bpf-lb-sock false`)."""
        spec = (lb or LBConfig()).apply(ObjectSpec.from_file(obj_dir / "sock.o"))
        return cls(spec.load(pin_dir), {})

    def detach(self) -> None:
        """Take the programs off the cgroup and remove the link pins (the maps stay)."""
        for link in self.links.values():
            link.detach()
            link.unpin()

    def apply(self, delta: MapDelta) -> None:
        """Write one delta: upserts in reference order, then deletes in reverse order (a
        missing key is success)."""
        for m in _UPSERT_ORDER:
            if m == MAGLEV:
                for key, value in sorted(delta.upserts[m].items()):
                    _update_maglev(self.maps[m], key, value)
            else:  # one syscall per map (a full sync of 30 000 services writes 180 000)
                self.maps[m].update_batch(list(delta.upserts[m].items()))
        for m in _DELETE_ORDER:
            for key in sorted(delta.deletes[m]):
                _delete(self.maps[m], key)

    def contents(self) -> dict[str, dict[bytes, bytes]]:
        """Every agent-owned map as it is in the kernel (Maglev: the inner maps' values)."""
        out = {m: dict(raw.lookup_batch(4096)) for m, raw in self.maps.items() if m != MAGLEV}
        out[MAGLEV] = {k: _inner_value(v) for k, v in _items(self.maps[MAGLEV])}
        return out

    def prune(self, desired: Mapping[str, Mapping[bytes, bytes]]) -> MapDelta:
        """Make the maps equal `desired`; returns what was changed."""
        have = self.contents()
        delta = MapDelta()
        for m in MAP_NAMES:
            want = desired.get(m, {})
            delta.upserts[m] = {k: v for k, v in want.items() if have[m].get(k) != v}
            delta.deletes[m] = set(have[m]) - set(want)
        self.apply(delta)
        return delta

    def close(self) -> None:
        for link in self.links.values():
            link.close()
        self._coll.close()


def remove_sock_lb(pin_dir: Path) -> None:
    """Detach and unpin the cgroup links (socket LB turned off since the last run); the maps
    stay for the per-packet paths."""
    for hook in HOOKS:
        if (pin := link_pin(pin_dir, hook)).exists():
            remove_pinned(pin)


def _attach(coll: Collection, prog_name: str, attach: AttachType, cgroup: Path, pin: Path) -> Link:
    program = coll.program(prog_name)
    if pin.exists():
        link = Link.from_pin(pin)
        try:
            link.update(program)
            return link
        except BpfError as e:  # e.g. the cgroup was removed: attach anew
            log.info("replacing link %s: %s", pin, e)
            link.unpin()
            link.close()
    link = attach_cgroup(cgroup, program, attach)
    link.pin(pin)
    return link


def _update_maglev(outer: RawMap, key: bytes, value: bytes) -> None:
    """A fresh inner array holding `value`, swapped in for `key`'s old one in one update."""
    lib = libbpf.lib()
    fd = libbpf.check(
        lib.bpf_map_create(MapType.ARRAY, b"pylium_maglev_i", 4, len(value), 1, None),
        f"create a {len(value)}-byte maglev table",
    )
    try:
        libbpf.check(lib.bpf_map_update_elem(fd, _ZERO, value, 0), "fill maglev table")
        outer.update_batch([(key, fd.to_bytes(4, "little"))])
    finally:
        os.close(fd)


def _inner_value(inner_id: bytes) -> bytes:
    """The one value of the inner array whose map id an outer Maglev entry holds."""
    fd = libbpf.check(
        libbpf.lib().bpf_map_get_fd_by_id(int.from_bytes(inner_id, "little")), "open maglev table"
    )
    try:
        value = ctypes.create_string_buffer(MapInfo.of_fd(fd).value_size)
        libbpf.check(libbpf.lib().bpf_map_lookup_elem(fd, _ZERO, value), "read maglev table")
        return value.raw
    finally:
        os.close(fd)


def _delete(raw: RawMap, key: bytes) -> None:
    ret = libbpf.lib().bpf_map_delete_elem(raw.fd, key)
    if ret != -errno.ENOENT:
        libbpf.check(ret, f"delete from {raw.name}")


def _items(raw: RawMap) -> Iterator[tuple[bytes, bytes]]:
    lib = libbpf.lib()
    prev: ctypes.Array[ctypes.c_char] | None = None
    while True:
        key = ctypes.create_string_buffer(raw.info.key_size)
        ret = lib.bpf_map_get_next_key(raw.fd, prev, key)
        if ret == -errno.ENOENT:
            return
        libbpf.check(ret, f"iterate {raw.name}")
        value = ctypes.create_string_buffer(raw.info.value_size)
        if lib.bpf_map_lookup_elem(raw.fd, key, value) == 0:
            yield key.raw, value.raw
        prev = key
