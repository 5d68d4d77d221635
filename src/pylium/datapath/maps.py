"""BPF maps: an fd with its kernel description (`RawMap`) and a typed view (`Map[K, V]`).

Keys and values are ctypes structures mirroring the C structs; sizes are checked against the
kernel's map on construction. Per-CPU maps return one value per possible CPU.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Generic, TypeVar

from pylium.datapath import libbpf
from pylium.datapath.closing import Closing
from pylium.datapath.errors import BpfError, KeyNotFound, NotSupported

K = TypeVar("K", bound=ctypes.Structure)
V = TypeVar("V", bound=ctypes.Structure)


class MapType(IntEnum):
    """The map types pylium uses (enum bpf_map_type)."""

    HASH = 1
    ARRAY = 2
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    RINGBUF = 27


PER_CPU_TYPES = frozenset({MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH})


class UpdateFlags(IntEnum):
    """bpf_map_update_elem flags."""

    ANY = 0
    NOEXIST = 1
    EXIST = 2


class _BpfMapInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
    ]


@dataclass(frozen=True)
class MapInfo:
    """What the kernel says about a map. `name` is the kernel's (at most 15 characters)."""

    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    name: str

    @classmethod
    def of_fd(cls, fd: int) -> MapInfo:
        raw = _BpfMapInfo()
        libbpf.obj_info(fd, raw)
        return cls(
            type=raw.type,
            id=raw.id,
            key_size=raw.key_size,
            value_size=raw.value_size,
            max_entries=raw.max_entries,
            name=raw.name.decode(),
        )


class RawMap(Closing):
    """An owned map fd. Close it (or use `with`) when done; pins outlive it."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self.info = MapInfo.of_fd(fd)

    @classmethod
    def from_pin(cls, path: os.PathLike[str] | str) -> RawMap:
        """Open a pinned map; its name is the pin's file name."""
        path = os.fspath(path)
        return cls(libbpf.obj_get(path), os.path.basename(path))

    def pin(self, path: os.PathLike[str] | str) -> None:
        libbpf.obj_pin(self.fd, os.fspath(path))

    def update_batch(self, entries: Sequence[tuple[bytes, bytes]]) -> None:
        """Insert or replace many encoded entries in one BPF_MAP_UPDATE_BATCH syscall (one
        value per key: not for per-CPU maps)."""
        if not entries:
            return
        keys = b"".join(k for k, _ in entries)
        values = b"".join(v for _, v in entries)
        ks, vs = self.info.key_size, self.info.value_size
        if len(keys) != len(entries) * ks or len(values) != len(entries) * vs:
            raise BpfError(errno.EINVAL, f"map {self.name}: every entry must be {ks}/{vs} bytes")
        n = ctypes.c_uint32(len(entries))
        ret = libbpf.lib().bpf_map_update_batch(self.fd, keys, values, ctypes.byref(n), None)
        _check_batch(ret, f"batch update {self.name}")

    def lookup_batch(self, chunk: int = 256) -> list[tuple[bytes, bytes]]:
        """Every entry, encoded, read `chunk` at a time with BPF_MAP_LOOKUP_BATCH (one value
        per key: not for per-CPU maps)."""
        ks, vs = self.info.key_size, self.info.value_size
        out: list[tuple[bytes, bytes]] = []
        keys = ctypes.create_string_buffer(ks * chunk)
        values = ctypes.create_string_buffer(vs * chunk)
        # The batch cursor is opaque to user space; a hash map uses a u32 bucket index.
        in_batch = ctypes.c_uint64()
        out_batch = ctypes.c_uint64()
        first = True
        while True:
            n = ctypes.c_uint32(chunk)
            ret = libbpf.lib().bpf_map_lookup_batch(
                self.fd,
                None if first else ctypes.byref(in_batch),
                ctypes.byref(out_batch),
                keys,
                values,
                ctypes.byref(n),
                None,
            )
            if ret < 0 and ret != -errno.ENOENT:
                _check_batch(ret, f"batch lookup {self.name}")
            kraw, vraw = keys.raw, values.raw
            out.extend(
                (kraw[i * ks : (i + 1) * ks], vraw[i * vs : (i + 1) * vs]) for i in range(n.value)
            )
            if ret == -errno.ENOENT:
                return out
            in_batch.value = out_batch.value
            first = False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Map(Generic[K, V]):
    """A typed view of a RawMap (which stays owned by whoever opened it)."""

    def __init__(self, raw: RawMap, key_type: type[K], value_type: type[V]) -> None:
        info = raw.info
        self.per_cpu = info.type in PER_CPU_TYPES
        self._ncpus = libbpf.num_possible_cpus() if self.per_cpu else 1
        # Per-CPU values are laid out at 8-byte strides, one per possible CPU.
        self._stride = (info.value_size + 7) & ~7 if self.per_cpu else info.value_size
        if ctypes.sizeof(key_type) != info.key_size or ctypes.sizeof(value_type) != info.value_size:
            raise BpfError(
                errno.EINVAL,
                f"map {raw.name}: key/value {ctypes.sizeof(key_type)}/{ctypes.sizeof(value_type)}"
                f" bytes, kernel has {info.key_size}/{info.value_size}",
            )
        self.raw = raw
        self.key_type = key_type
        self.value_type = value_type

    @property
    def name(self) -> str:
        return self.raw.name

    def _value_buffer(self) -> ctypes.Array[ctypes.c_char]:
        return ctypes.create_string_buffer(self._stride * self._ncpus)

    def lookup_all_cpus(self, key: K) -> list[V]:
        """The value of `key` on every CPU (per-CPU maps) or a one-element list; KeyNotFound."""
        buf = self._value_buffer()
        ret = libbpf.lib().bpf_map_lookup_elem(self.raw.fd, ctypes.byref(key), buf)
        if ret == -errno.ENOENT:
            raise KeyNotFound(f"lookup in {self.name}")
        libbpf.check(ret, f"lookup in {self.name}")
        return [
            self.value_type.from_buffer_copy(buf.raw, i * self._stride) for i in range(self._ncpus)
        ]

    def lookup(self, key: K) -> V:
        """The value of `key`; raises KeyNotFound. Per-CPU maps: use lookup_all_cpus."""
        if self.per_cpu:
            raise TypeError(f"{self.name} is per-CPU: use lookup_all_cpus")
        return self.lookup_all_cpus(key)[0]

    def get(self, key: K) -> V | None:
        """The value of `key`, or None."""
        try:
            return self.lookup(key)
        except KeyNotFound:
            return None

    def update(self, key: K, value: V, flags: UpdateFlags = UpdateFlags.ANY) -> None:
        """Insert or replace (per-CPU maps: the same value on every CPU)."""
        buf = self._value_buffer()
        for i in range(self._ncpus):
            ctypes.memmove(
                ctypes.byref(buf, i * self._stride), ctypes.byref(value), ctypes.sizeof(value)
            )
        libbpf.check(
            libbpf.lib().bpf_map_update_elem(self.raw.fd, ctypes.byref(key), buf, flags),
            f"update {self.name}",
        )

    def delete(self, key: K, missing_ok: bool = False) -> None:
        """Remove `key`; KeyNotFound unless `missing_ok` (deleting what is gone is success)."""
        ret = libbpf.lib().bpf_map_delete_elem(self.raw.fd, ctypes.byref(key))
        if ret == -errno.ENOENT:
            if missing_ok:
                return
            raise KeyNotFound(f"delete from {self.name}")
        libbpf.check(ret, f"delete from {self.name}")

    def keys(self) -> Iterator[K]:
        """Iterate keys. Collect them first if you mean to delete while iterating."""
        key: K | None = None
        while True:
            nxt = self.key_type()
            ret = libbpf.lib().bpf_map_get_next_key(
                self.raw.fd, None if key is None else ctypes.byref(key), ctypes.byref(nxt)
            )
            if ret == -errno.ENOENT:
                return
            libbpf.check(ret, f"iterate {self.name}")
            yield nxt
            key = nxt

    def __iter__(self) -> Iterator[K]:
        return self.keys()

    def items(self) -> Iterator[tuple[K, V]]:
        """Iterate (key, value); keys removed meanwhile are skipped."""
        for key in self.keys():
            value = self.get(key)
            if value is not None:
                yield key, value

    def update_batch(self, entries: Sequence[tuple[K, V]]) -> None:
        """Insert or replace many entries in one syscall (not for per-CPU maps)."""
        self._no_per_cpu()
        self.raw.update_batch([(bytes(k), bytes(v)) for k, v in entries])

    def lookup_batch(self, chunk: int = 256) -> list[tuple[K, V]]:
        """Every entry, read `chunk` at a time with BPF_MAP_LOOKUP_BATCH (not per-CPU maps)."""
        self._no_per_cpu()
        return [
            (self.key_type.from_buffer_copy(k), self.value_type.from_buffer_copy(v))
            for k, v in self.raw.lookup_batch(chunk)
        ]

    def _no_per_cpu(self) -> None:
        if self.per_cpu:
            raise TypeError(f"{self.name} is per-CPU: batch operations take one value per key")


def _check_batch(ret: int, context: str) -> None:
    if ret in (-errno.EOPNOTSUPP, -524):  # 524: ENOTSUPP, the kernel-internal spelling
        raise NotSupported("batch map operations", "5.6", -ret)
    libbpf.check(ret, context)
