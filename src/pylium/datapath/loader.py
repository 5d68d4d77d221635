"""Load BPF objects the cilium/ebpf way: a pure spec, then live kernel objects.

    spec = ObjectSpec.from_file(OBJ_DIR / "from_container.o").with_constants(router_ip=gw)
    with spec.load(pin_dir=bpffs_node_dir(node)) as coll:   # closed on exit; pins stay
        prog = coll.program("from_container")

`ObjectSpec` is a value (path + constants); `load` opens the ELF with libbpf, writes the
constants into `.rodata`, pins every map by name under `pin_dir` (re-using maps already pinned
there, which is how a restarted agent keeps its state), loads, and hands back a `Collection`
of owned fds. The libbpf object itself is closed right after load. Errors: see `errors`.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from pylium.datapath import libbpf
from pylium.datapath.closing import Closing
from pylium.datapath.errors import BpfError, KeyNotFound, NotSupported, VerifierError
from pylium.datapath.maps import Map, RawMap

__all__ = [
    "OBJ_DIR",
    "BpfError",
    "Collection",
    "KeyNotFound",
    "NotSupported",
    "ObjectSpec",
    "Program",
    "VerifierError",
]

OBJ_DIR = Path(__file__).parent / "bpf"
"""Where `make -C bpf` puts the compiled objects (package data)."""

K = TypeVar("K", bound=ctypes.Structure)
V = TypeVar("V", bound=ctypes.Structure)

_BTF_KIND_DATASEC = 15
_RODATA = ".rodata"


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size", ctypes.c_uint32)]


class _BtfVarSecinfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("offset", ctypes.c_uint32), ("size", ctypes.c_uint32)]


class _BpfProgInfo(ctypes.Structure):
    # The head of struct bpf_prog_info; the kernel fills only what fits.
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32)]


class Program:
    """An owned program fd."""

    def __init__(self, fd: int, name: str) -> None:
        info = _BpfProgInfo()
        libbpf.obj_info(fd, info)
        self.fd = fd
        self.name = name
        self.type: int = info.type
        self.id: int = info.id

    @classmethod
    def from_pin(cls, path: os.PathLike[str] | str) -> Program:
        path = os.fspath(path)
        return cls(libbpf.obj_get(path), os.path.basename(path))

    def pin(self, path: os.PathLike[str] | str) -> None:
        libbpf.obj_pin(self.fd, os.fspath(path))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Collection(Closing):
    """The programs and maps of one loaded object, by name. Closing closes every fd."""

    def __init__(self, programs: dict[str, Program], maps: dict[str, RawMap]) -> None:
        self.programs = programs
        self.maps = maps

    def program(self, name: str) -> Program:
        """The program `name`; KeyError names what the object has."""
        if name not in self.programs:
            raise KeyError(f"no program {name!r}; object has {sorted(self.programs)}")
        return self.programs[name]

    def map(self, name: str, key_type: type[K], value_type: type[V]) -> Map[K, V]:
        """A typed view of map `name` (owned by this collection)."""
        if name not in self.maps:
            raise KeyError(f"no map {name!r}; object has {sorted(self.maps)}")
        return Map(self.maps[name], key_type, value_type)

    def close(self) -> None:
        for prog in self.programs.values():
            prog.close()
        for m in self.maps.values():
            m.close()


@dataclass(frozen=True)
class ObjectSpec:
    """A compiled object file, the `.rodata` constants to set before load, map sizes that
    override the compiled ones (Cilium's `--bpf-lb-map-max` and friends) and value sizes of
    map-in-map inner templates (the Maglev table size)."""

    path: Path
    constants: Mapping[str, int | bytes] = field(default_factory=dict)
    max_entries: Mapping[str, int] = field(default_factory=dict)
    inner_value_sizes: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: os.PathLike[str] | str) -> ObjectSpec:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"BPF object {p} not found (run `make -C bpf`)")
        return cls(path=p)

    def with_constants(self, **values: int | bytes) -> ObjectSpec:
        """A copy with more constants: ints are written native-endian, bytes as they are."""
        return replace(self, constants={**self.constants, **values})

    def with_max_entries(self, **sizes: int) -> ObjectSpec:
        """A copy whose maps of these names get these sizes (a pinned map of another size is
        not re-used: libbpf refuses it)."""
        return replace(self, max_entries={**self.max_entries, **sizes})

    def with_inner_value_sizes(self, **sizes: int) -> ObjectSpec:
        """A copy whose map-in-map outer maps of these names get inner maps of this value size
        (in bytes; inner maps the agent creates must match it)."""
        return replace(self, inner_value_sizes={**self.inner_value_sizes, **sizes})

    def load(
        self,
        pin_dir: os.PathLike[str] | str | None = None,
        reuse_maps: Mapping[str, RawMap] | None = None,
    ) -> Collection:
        """Load into the kernel.

        Args:
            pin_dir: pin every map here by name, re-using maps already pinned (restart).
            reuse_maps: share these maps (by name) instead of creating new ones, e.g. the
                maps of another object loaded without pins.

        Raises:
            VerifierError: a program was rejected; the error's `log` holds libbpf's output,
                including the verifier log.
        """
        obj = libbpf.check_ptr(
            libbpf.lib().bpf_object__open_file(str(self.path).encode(), None),
            f"open {self.path}",
        )
        try:
            self._set_constants(obj)
            self._prepare_maps(obj, pin_dir, reuse_maps or {})
            for m, name in _maps(obj):
                if name in self.max_entries:
                    size = self.max_entries[name]
                    libbpf.check(libbpf.lib().bpf_map__set_max_entries(m, size), f"size {name}")
                if name in self.inner_value_sizes:
                    inner = libbpf.check_ptr(libbpf.lib().bpf_map__inner_map(m), f"inner {name}")
                    size = self.inner_value_sizes[name]
                    libbpf.check(libbpf.lib().bpf_map__set_value_size(inner, size), f"size {name}")
            with libbpf.capture_log() as log:
                ret = libbpf.lib().bpf_object__load(obj)
            if ret < 0:
                text = "".join(log)
                if "program load failed" in text:
                    raise VerifierError(-ret, f"load {self.path.name}", text)
                raise BpfError(-ret, f"load {self.path.name}: {text.strip()}")
            return _collect(obj)
        finally:
            libbpf.lib().bpf_object__close(obj)

    def _set_constants(self, obj: int) -> None:
        if not self.constants:
            return
        rodata = _find_map(obj, _RODATA)
        if rodata is None:
            raise BpfError(
                errno.EINVAL, f"{self.path.name} has no .rodata for {sorted(self.constants)}"
            )
        size = ctypes.c_size_t()
        addr = libbpf.lib().bpf_map__initial_value(rodata, ctypes.byref(size))
        layout = _datasec_layout(obj, _RODATA)
        for name, value in self.constants.items():
            if name not in layout:
                raise KeyError(f"no constant {name!r} in {self.path.name}; has {sorted(layout)}")
            offset, width = layout[name]
            data = value if isinstance(value, bytes) else value.to_bytes(width, "little")
            if len(data) != width:
                raise ValueError(f"constant {name} is {width} bytes, got {len(data)}")
            ctypes.memmove(addr + offset, data, width)

    @staticmethod
    def _prepare_maps(
        obj: int, pin_dir: os.PathLike[str] | str | None, reuse: Mapping[str, RawMap]
    ) -> None:
        if pin_dir is not None:
            Path(pin_dir).mkdir(parents=True, exist_ok=True)
        for m, name in _maps(obj):
            if "." in name:  # .rodata/.bss of this object: never shared
                continue
            if pin_dir is not None:
                path = os.path.join(pin_dir, name)
                libbpf.check(
                    libbpf.lib().bpf_map__set_pin_path(m, path.encode()), f"pin path {path}"
                )
            elif name in reuse:
                libbpf.check(libbpf.lib().bpf_map__reuse_fd(m, reuse[name].fd), f"reuse {name}")

    def constant_names(self) -> list[str]:
        """The `.rodata` globals this object declares (no kernel needed)."""
        obj = libbpf.check_ptr(
            libbpf.lib().bpf_object__open_file(str(self.path).encode(), None),
            f"open {self.path}",
        )
        try:
            return sorted(_datasec_layout(obj, _RODATA))
        finally:
            libbpf.lib().bpf_object__close(obj)


def _maps(obj: int) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    m = libbpf.lib().bpf_object__next_map(obj, None)
    while m:
        out.append((m, libbpf.lib().bpf_map__name(m).decode()))
        m = libbpf.lib().bpf_object__next_map(obj, m)
    return out


def _find_map(obj: int, suffix: str) -> int | None:
    return next((m for m, name in _maps(obj) if name.endswith(suffix)), None)


def _datasec_layout(obj: int, section: str) -> dict[str, tuple[int, int]]:
    """Variable name -> (offset, size) in a data section, read from the object's BTF."""
    lib = libbpf.lib()
    btf = lib.bpf_object__btf(obj)
    if not btf:
        return {}
    type_id = lib.btf__find_by_name_kind(btf, section.encode(), _BTF_KIND_DATASEC)
    if type_id < 0:
        return {}
    sec_addr = lib.btf__type_by_id(btf, type_id)
    sec = _BtfType.from_address(sec_addr)
    vlen = sec.info & 0xFFFF
    infos = (_BtfVarSecinfo * vlen).from_address(sec_addr + ctypes.sizeof(_BtfType))
    layout: dict[str, tuple[int, int]] = {}
    for info in infos:
        var = _BtfType.from_address(lib.btf__type_by_id(btf, info.type))
        layout[lib.btf__name_by_offset(btf, var.name_off).decode()] = (info.offset, info.size)
    return layout


def _collect(obj: int) -> Collection:
    """Duplicate every fd of a loaded object so the Collection owns them."""
    lib = libbpf.lib()
    programs: dict[str, Program] = {}
    prog = lib.bpf_object__next_program(obj, None)
    while prog:
        name = lib.bpf_program__name(prog).decode()
        programs[name] = Program(os.dup(lib.bpf_program__fd(prog)), name)
        prog = lib.bpf_object__next_program(obj, prog)
    maps = {
        name: RawMap(os.dup(lib.bpf_map__fd(m)), name) for m, name in _maps(obj) if "." not in name
    }
    return Collection(programs, maps)


def load_pair(
    first: ObjectSpec, second: ObjectSpec, pin_dir: os.PathLike[str] | str | None = None
) -> tuple[Collection, Collection]:
    """Load two objects whose programs share maps: the second re-uses the first's maps (and
    both pin under `pin_dir`). If the second fails, the first is closed again."""
    with ExitStack() as stack:
        one = stack.enter_context(first.load(pin_dir=pin_dir))
        two = stack.enter_context(second.load(pin_dir=pin_dir, reuse_maps=one.maps))
        stack.pop_all()
        return one, two
