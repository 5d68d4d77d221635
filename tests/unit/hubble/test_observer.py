"""The observer reads events on the loop in bounded batches and counts what it cannot decode
(the real ring buffer is in tests/datapath/hubble)."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import suppress
from dataclasses import replace
from pathlib import Path

from pylium.datapath.events import Event
from pylium.hubble.observer import LOST_DATAPATH, LOST_DECODE, Observer, ObserverParams
from pylium.hubble.parser import FlowParser
from tests.support import eventually
from tests.unit.hubble.test_parser import FakeLookup, event

BAD = None  # an undecodable record


class FakeReader:
    """Like PinnedRingBuffer: a readable fd while records wait; consume() hands them over,
    re-raises what the callback raises, and raises ValueError for an undecodable record
    (consuming it, as libbpf does)."""

    def __init__(self, pin: Path, callback: Callable[[Event], None]) -> None:
        self.pin = pin
        self.callback = callback
        self.pending: list[Event | None] = []
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        self.consume_calls = 0
        self.datapath_lost = 0
        self.closed = False

    @property
    def fd(self) -> int:
        return self.r

    def push(self, *records: Event | None) -> None:
        self.pending.extend(records)
        os.write(self.w, b"x")

    def consume(self) -> int:
        self.consume_calls += 1
        handled = 0
        while self.pending:
            record = self.pending.pop(0)
            if record is BAD:
                raise ValueError("event of 3 bytes")
            self.callback(record)
            handled += 1
        with suppress(BlockingIOError):
            os.read(self.r, 4096)  # nothing waits: no longer readable
        return handled

    def lost(self) -> int:
        return self.datapath_lost

    def close(self) -> None:
        self.closed = True
        os.close(self.r)
        os.close(self.w)


async def test_that_events_are_read_in_batches_and_bad_ones_counted():
    readers: list[FakeReader] = []

    def open_reader(pin, callback):
        readers.append(FakeReader(pin, callback))
        return readers[-1]

    obs = Observer(
        ObserverParams(events_pin=Path("/pins/pylium_events"), capacity=5, batch=3),
        FlowParser(FakeLookup(), "lab-node1"),
        open_reader,
    )
    await obs.start()
    (reader,) = readers
    assert reader.pin == Path("/pins/pylium_events")
    records = [replace(event(), sport=1000 + i) for i in range(10)]
    reader.push(*records[:4], BAD, *records[4:])
    assert obs.ring.seen == 0  # nothing is read until the loop runs

    async def all_read():
        return obs.ring.seen == 10

    await eventually(all_read, timeout=5)
    # Ten events at three per wake-up: the loop got control back in between.
    assert reader.consume_calls >= 4
    assert [f.l4.source_port for f in obs.ring] == [1005, 1006, 1007, 1008, 1009]
    status = obs.status()
    assert (status.num_flows, status.max_flows, status.seen_flows) == (5, 5, 10)
    assert status.lost[LOST_DECODE] == 1
    reader.datapath_lost = 7  # the ring buffer was full 7 times
    assert obs.status().lost[LOST_DATAPATH] == 7

    await obs.stop()
    assert reader.closed
