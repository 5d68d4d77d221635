"""The agent's flow observer: reads the datapath's event ring buffer on the event loop, turns
each event into an enriched flow and keeps it in the ring of recent flows.

The `pylium_events` map fd is pollable (readable while the kernel ring holds records), so it is
registered with the loop (`loop.add_reader`) and drained without blocking: each wake-up handles
at most `batch` events and leaves the rest to the next loop iteration (the reader stays
readable), so requests keep being served under an event flood.

Lost events are counted per source (Hubble's LostEventSource names):

- `PERF_EVENT_RING_BUFFER`: records the datapath could not write because the ring was full
  (it counts failed `bpf_ringbuf_output` calls in the per-CPU `pylium_events_lost`);
- `OBSERVER_EVENTS_QUEUE`: events read but not turned into flows (undecodable records);
- `HUBBLE_RING_BUFFER`: flows a slow follower (a `--follow` stream) did not receive.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pylium.datapath.events import Event, RingBuffer
from pylium.datapath.maps import Map, RawMap
from pylium.hubble.parser import FlowParser
from pylium.hubble.ring import DEFAULT_CAPACITY, FlowRing

log = logging.getLogger(__name__)

LOST_DECODE = "OBSERVER_EVENTS_QUEUE"
LOST_FOLLOWERS = "HUBBLE_RING_BUFFER"
LOST_DATAPATH = "PERF_EVENT_RING_BUFFER"
"""Events the datapath could not write: the ring buffer was full (`pylium_events_lost`)."""
MAP_EVENTS_LOST = "pylium_events_lost"


class _BatchDone(Exception):
    """Raised from the sample callback to end one drain after `batch` events (libbpf commits
    the record it was handling, so nothing is lost)."""


class EventReader(Protocol):
    """A source of datapath events: readable `fd`, non-blocking `consume`."""

    @property
    def fd(self) -> int:
        """Readable (for the event loop) while events wait."""

    def consume(self) -> int:
        """Hand every waiting event to the callback; ValueError for an undecodable one (which
        is consumed: a later call goes on after it)."""

    def lost(self) -> int:
        """Events the datapath dropped because the ring buffer was full."""

    def close(self) -> None: ...


class _Index(ctypes.Structure):
    _fields_ = [("index", ctypes.c_uint32)]


class _Count(ctypes.Structure):
    _fields_ = [("count", ctypes.c_uint64)]


class PinnedRingBuffer:
    """The pinned `pylium_events` map with libbpf's ring buffer consumer on it, and its loss
    counter (`pylium_events_lost`, pinned next to it)."""

    def __init__(self, pin: Path, callback: Callable[[Event], None]) -> None:
        self._map = RawMap.from_pin(pin)
        lost: RawMap | None = None
        try:
            lost = RawMap.from_pin(pin.with_name(MAP_EVENTS_LOST))
            self._lost = Map(lost, _Index, _Count)
            self._rb = RingBuffer(self._map, callback)
        except BaseException:
            if lost is not None:
                lost.close()
            self._map.close()
            raise

    @property
    def fd(self) -> int:
        # A ring buffer map fd polls readable while records wait (libbpf epolls it too).
        return self._map.fd

    def consume(self) -> int:
        return self._rb.consume()

    def lost(self) -> int:
        return sum(v.count for v in self._lost.lookup_all_cpus(_Index(0)))

    def close(self) -> None:
        self._rb.close()
        self._lost.raw.close()
        self._map.close()


OpenReader = Callable[[Path, Callable[[Event], None]], EventReader]


@dataclass(frozen=True)
class ObserverParams:
    """Where the events come from and how many flows to keep."""

    events_pin: Path
    """The pinned `pylium_events` ring buffer map (`<bpffs node dir>/pylium_events`)."""
    capacity: int = DEFAULT_CAPACITY
    """Flows kept for `--last` (Hubble's default ring size)."""
    batch: int = 512
    """Events handled per loop wake-up at most."""


@dataclass(frozen=True)
class ObserverStatus:
    """What `GET /v1/flows/status` reports (Hubble's ServerStatusResponse names)."""

    num_flows: int
    max_flows: int
    seen_flows: int
    uptime_ns: int
    lost: dict[str, int]


class Observer:
    """Owns the ring buffer consumer and the ring of recent flows. start()/stop()."""

    def __init__(
        self,
        params: ObserverParams,
        parser: FlowParser,
        open_reader: OpenReader = PinnedRingBuffer,
    ) -> None:
        """`open_reader` opens the event source at start (tests pass a fake)."""
        if params.batch < 1:
            raise ValueError("batch must be positive")
        self.params = params
        self.ring = FlowRing(params.capacity)
        self._parser = parser
        self._open_reader = open_reader
        self._reader: EventReader | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_batch = 0
        self._started_ns = 0
        self.decode_errors = 0
        """Events that could not be decoded or parsed (lost as OBSERVER_EVENTS_QUEUE)."""

    async def start(self) -> None:
        """Open the pinned ring buffer and start reading it on the running loop."""
        reader = self._open_reader(self.params.events_pin, self._on_event)
        try:
            asyncio.get_running_loop().add_reader(reader.fd, self._drain)
        except BaseException:
            reader.close()
            raise
        self._reader, self._loop = reader, asyncio.get_running_loop()
        self._started_ns = time.monotonic_ns()
        self._drain()  # what the datapath wrote before we started
        log.info("observing flows from %s", self.params.events_pin)

    async def stop(self) -> None:
        """Stop reading, end every follower and close the ring buffer."""
        if self._loop is not None and self._reader is not None:
            self._loop.remove_reader(self._reader.fd)
        self._loop = None
        self.ring.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def status(self) -> ObserverStatus:
        """Counters of the ring and of lost events."""
        return ObserverStatus(
            num_flows=len(self.ring),
            max_flows=self.ring.capacity,
            seen_flows=self.ring.seen,
            uptime_ns=time.monotonic_ns() - self._started_ns if self._started_ns else 0,
            lost={
                LOST_DATAPATH: self._reader.lost() if self._reader is not None else 0,
                LOST_DECODE: self.decode_errors,
                LOST_FOLLOWERS: self.ring.follower_lost,
            },
        )

    def _drain(self) -> None:
        """Handle up to `batch` events already in the ring buffer, without waiting."""
        if self._reader is None:
            return
        self._in_batch = 0
        while self._in_batch < self.params.batch:
            try:
                if self._reader.consume() == 0:
                    return
            except _BatchDone:
                return
            except ValueError as err:  # a record Event.decode does not understand
                self._in_batch += 1
                self.decode_errors += 1
                log.warning("undecodable flow event: %s", err)

    def _on_event(self, event: Event) -> None:
        self._in_batch += 1
        try:
            self.ring.append(self._parser.parse(event))
        except Exception:
            self.decode_errors += 1
            log.exception("cannot turn %s into a flow", event)
        if self._in_batch >= self.params.batch:
            raise _BatchDone
