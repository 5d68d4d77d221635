"""The loader and map wrapper against the real kernel: constants, verifier errors, single and
batch map operations, conntrack garbage collection."""

from __future__ import annotations

import ipaddress

import pytest

from pylium.datapath.conntrack import Ct4Tuple, CtEntry, TupleFlags, gc, monotonic_seconds
from pylium.datapath.errors import KeyNotFound, VerifierError
from pylium.datapath.loader import OBJ_DIR, ObjectSpec
from pylium.datapath.lxc import EndpointInfo, EndpointKey
from pylium.datapath.maps import UpdateFlags
from tests.datapath.bpf.conftest import CONFIG, build, load_objects

pytestmark = pytest.mark.root


def test_that_the_node_config_names_exactly_the_objects_constants():
    for name in ("from_container.o", "to_container.o"):
        spec = ObjectSpec.from_file(OBJ_DIR / name)
        assert spec.constant_names() == sorted(CONFIG.constants())


def test_that_an_unknown_constant_is_refused_before_load(pin_dir):
    spec = ObjectSpec.from_file(OBJ_DIR / "from_container.o").with_constants(no_such=1)
    with pytest.raises(KeyError, match="no_such"):
        spec.load(pin_dir=pin_dir)


def test_that_a_constant_of_the_wrong_width_is_refused(pin_dir):
    spec = ObjectSpec.from_file(OBJ_DIR / "from_container.o").with_constants(router_ip=b"\1\2")
    with pytest.raises(ValueError, match="router_ip is 4 bytes"):
        spec.load(pin_dir=pin_dir)


def test_that_a_verifier_rejection_raises_with_the_verifier_log(tmp_path):
    spec = ObjectSpec.from_file(build("bad_null_deref.c", tmp_path))
    with pytest.raises(VerifierError) as info:
        spec.load()
    assert "map_value_or_null" in info.value.log
    assert "bad_null_deref" in str(info.value)


def test_that_maps_are_pinned_by_name_and_reused_on_reload(pin_dir):
    with load_objects(pin_dir) as first:
        first_id = first.lxc.raw.info.id
    assert {p.name for p in pin_dir.iterdir()} >= {
        "pylium_lxc",
        "pylium_lxc_if",
        "pylium_ct4_global",
        "pylium_metrics",
        "pylium_events",
    }
    with load_objects(pin_dir) as second:
        assert second.lxc.raw.info.id == first_id


def _endpoint(i: int) -> tuple[EndpointKey, EndpointInfo]:
    ip = str(ipaddress.IPv4Address("10.244.2.0") + i)
    info = EndpointInfo.make(100 + i, i, ip, "02:00:00:00:00:01", "02:00:00:00:00:02")
    return EndpointKey.of(ip), info


def test_that_single_map_operations_add_find_and_delete(objs):
    key, info = _endpoint(1)
    objs.lxc.update(key, info, UpdateFlags.NOEXIST)
    assert bytes(objs.lxc.lookup(key)) == bytes(info)
    objs.lxc.delete(key)
    with pytest.raises(KeyNotFound):
        objs.lxc.lookup(key)
    with pytest.raises(KeyNotFound):
        objs.lxc.delete(key)
    objs.lxc.delete(key, missing_ok=True)  # already gone is success


def test_that_batch_update_and_lookup_move_many_entries(objs):
    entries = [_endpoint(i) for i in range(1, 601)]
    objs.lxc.update_batch(entries)

    got = {bytes(k): bytes(v) for k, v in objs.lxc.lookup_batch(chunk=128)}
    # The two endpoints of the fixture plus the 600 written in one call.
    assert len(got) == 602
    assert all(got[bytes(k)] == bytes(v) for k, v in entries)
    assert {bytes(k) for k in objs.lxc} == set(got)


def test_that_conntrack_gc_deletes_expired_entries_only(objs):
    now = monotonic_seconds()
    old = Ct4Tuple.make("10.244.1.10", "192.0.2.1", 1000, 80, 6, TupleFlags.OUT)
    live = Ct4Tuple.make("10.244.1.10", "192.0.2.1", 1001, 80, 6, TupleFlags.OUT)
    objs.ct4.update(old, CtEntry(lifetime=now - 5))
    objs.ct4.update(live, CtEntry(lifetime=now + 60))

    assert gc(objs.ct4) == 1
    assert [repr(k) for k in objs.ct4] == [repr(live)]
