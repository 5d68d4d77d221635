"""A small ctypes binding to the system libbpf (`libbpf.so.1`, 1.1 on Debian 12).

Only the functions pylium uses are declared. libbpf 1.x returns `-errno` from its low-level
`bpf_*` calls and NULL plus `errno` from constructors; `check` and `check_ptr` turn both into
`BpfError`. libbpf's log (warnings and the verifier log) is routed through `capture_log` so a
failed load can carry it. The library is opened on first use, never at import.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pylium.datapath.errors import BpfError

_log = logging.getLogger(__name__)

c_void_p = ctypes.c_void_p
c_int = ctypes.c_int
c_uint32 = ctypes.c_uint32
c_char_p = ctypes.c_char_p

PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
"""libbpf_print_fn_t: (level, format, va_list)."""

SAMPLE_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, ctypes.c_size_t)
"""ring_buffer_sample_fn: (ctx, data, size)."""

_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "libbpf_set_print": (c_void_p, [PRINT_FN]),
    "libbpf_num_possible_cpus": (c_int, []),
    "bpf_object__open_file": (c_void_p, [c_char_p, c_void_p]),
    "bpf_object__load": (c_int, [c_void_p]),
    "bpf_object__close": (None, [c_void_p]),
    "bpf_object__next_map": (c_void_p, [c_void_p, c_void_p]),
    "bpf_object__next_program": (c_void_p, [c_void_p, c_void_p]),
    "bpf_object__btf": (c_void_p, [c_void_p]),
    "bpf_map__name": (c_char_p, [c_void_p]),
    "bpf_map__fd": (c_int, [c_void_p]),
    "bpf_map__initial_value": (c_void_p, [c_void_p, ctypes.POINTER(ctypes.c_size_t)]),
    "bpf_map__set_pin_path": (c_int, [c_void_p, c_char_p]),
    "bpf_map__reuse_fd": (c_int, [c_void_p, c_int]),
    "bpf_map__set_max_entries": (c_int, [c_void_p, ctypes.c_uint32]),
    "bpf_map__inner_map": (c_void_p, [c_void_p]),
    "bpf_map__set_value_size": (c_int, [c_void_p, ctypes.c_uint32]),
    "bpf_map_create": (
        c_int,
        [c_int, c_char_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, c_void_p],
    ),
    "bpf_map_get_fd_by_id": (c_int, [c_uint32]),
    "bpf_program__name": (c_char_p, [c_void_p]),
    "bpf_program__fd": (c_int, [c_void_p]),
    "btf__find_by_name_kind": (ctypes.c_int32, [c_void_p, c_char_p, c_uint32]),
    "btf__type_by_id": (c_void_p, [c_void_p, c_uint32]),
    "btf__name_by_offset": (c_char_p, [c_void_p, c_uint32]),
    "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, ctypes.c_uint64]),
    "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
    "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_lookup_batch": (
        c_int,
        [c_int, c_void_p, c_void_p, c_void_p, c_void_p, ctypes.POINTER(c_uint32), c_void_p],
    ),
    "bpf_map_update_batch": (
        c_int,
        [c_int, c_void_p, c_void_p, ctypes.POINTER(c_uint32), c_void_p],
    ),
    "bpf_obj_pin": (c_int, [c_int, c_char_p]),
    "bpf_obj_get": (c_int, [c_char_p]),
    "bpf_obj_get_info_by_fd": (c_int, [c_int, c_void_p, ctypes.POINTER(c_uint32)]),
    "bpf_link_create": (c_int, [c_int, c_int, c_int, c_void_p]),
    "bpf_prog_query": (
        c_int,
        [c_int, c_int, c_uint32, ctypes.POINTER(c_uint32), c_void_p, ctypes.POINTER(c_uint32)],
    ),
    "bpf_link_detach": (c_int, [c_int]),
    "bpf_link_update": (c_int, [c_int, c_int, c_void_p]),
    "bpf_prog_test_run_opts": (c_int, [c_int, c_void_p]),
    "ring_buffer__new": (c_void_p, [c_int, SAMPLE_FN, c_void_p, c_void_p]),
    "ring_buffer__poll": (c_int, [c_void_p, c_int]),
    "ring_buffer__consume": (c_int, [c_void_p]),
    "ring_buffer__free": (None, [c_void_p]),
}

# x86_64 va_list is a pointer to one 24-byte __va_list_tag; copying it is va_copy().
_VA_LIST_TAG_SIZE = 24

_capture = threading.local()


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None)
    libc.vsnprintf.restype = c_int
    libc.vsnprintf.argtypes = [c_void_p, ctypes.c_size_t, c_char_p, c_void_p]
    return libc


def _format(fmt: bytes, va_list: int) -> str:
    """vsnprintf twice: once to size the message, once (on a va_copy) to write it."""
    saved = ctypes.create_string_buffer(_VA_LIST_TAG_SIZE)
    ctypes.memmove(saved, va_list, _VA_LIST_TAG_SIZE)
    size = _libc().vsnprintf(None, 0, fmt, va_list)
    buf = ctypes.create_string_buffer(size + 1)
    _libc().vsnprintf(buf, size + 1, fmt, ctypes.addressof(saved))
    return buf.value.decode(errors="replace")


def _print(level: int, fmt: bytes, va_list: int) -> int:
    message = _format(fmt, va_list)
    sink: list[str] | None = getattr(_capture, "lines", None)
    if sink is not None:
        sink.append(message)
    else:
        _log.debug("libbpf: %s", message.rstrip())
    return 0


_PRINT_CALLBACK = PRINT_FN(_print)


@functools.cache
def lib() -> Any:
    """The configured library (ctypes function objects are untyped, hence Any)."""
    so = ctypes.CDLL("libbpf.so.1", use_errno=True)
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(so, name)
        fn.restype = restype
        fn.argtypes = argtypes
    so.libbpf_set_print(_PRINT_CALLBACK)
    return so


@contextmanager
def capture_log() -> Iterator[list[str]]:
    """Collect what libbpf prints on this thread (e.g. the verifier log) into a list."""
    lib()
    lines: list[str] = []
    previous = getattr(_capture, "lines", None)
    _capture.lines = lines
    try:
        yield lines
    finally:
        _capture.lines = previous


def check(ret: int, context: str) -> int:
    """Return `ret`, or raise BpfError when it is a negative errno."""
    if ret < 0:
        raise BpfError(-ret, context)
    return ret


def check_ptr(ptr: int | None, context: str) -> int:
    """Return a non-NULL pointer, or raise BpfError from errno."""
    if not ptr:
        raise BpfError(ctypes.get_errno() or errno.EINVAL, context)
    return ptr


def num_possible_cpus() -> int:
    """How many values a per-CPU map holds per key."""
    return check(lib().libbpf_num_possible_cpus(), "count possible cpus")


def obj_get(path: str) -> int:
    """Open a pinned object (map, program, link) and return a new fd."""
    return check(lib().bpf_obj_get(path.encode()), f"open pin {path}")


def obj_pin(fd: int, path: str) -> None:
    """Pin an fd's object at a bpffs path."""
    check(lib().bpf_obj_pin(fd, path.encode()), f"pin {path}")


def obj_info(fd: int, info: ctypes.Structure) -> None:
    """Fill `info` (bpf_map_info, bpf_prog_info, bpf_link_info) for an fd."""
    size = c_uint32(ctypes.sizeof(info))
    check(
        lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)),
        f"get info of fd {fd}",
    )
