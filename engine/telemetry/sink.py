"""Where events go: the EventSink protocol, simple sinks, and the Emitter that stamps events.

Knows the event models and nothing about what consumes them (files, screens) or about training.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Protocol, TypeVar, runtime_checkable

from engine.telemetry.events import LIFECYCLE_KINDS, EventBase

E = TypeVar("E", bound=EventBase)


@runtime_checkable
class EventSink(Protocol):
    """Anything that accepts events: the run log, a progress printer, a list in a test."""

    def write(self, event: EventBase) -> None:
        """Take one event (may buffer it)."""

    def flush(self, fsync: bool = False) -> None:
        """Push buffered events out; with `fsync`, also to stable storage where that means anything."""

    def close(self) -> None:
        """Flush and release resources. Idempotent."""


class ListSink:
    """Keeps every event in `events` and counts flushes (for tests and in-process consumers)."""

    def __init__(self) -> None:
        self.events: list[EventBase] = []
        self.flushes = 0
        self.fsyncs = 0
        self.closed = False

    def write(self, event: EventBase) -> None:
        """Append the event."""
        self.events.append(event)

    def flush(self, fsync: bool = False) -> None:
        """Count the flush (and whether it asked for fsync)."""
        self.flushes += 1
        self.fsyncs += bool(fsync)

    def close(self) -> None:
        """Mark closed."""
        self.closed = True

    def kinds(self) -> list[str]:
        """The kinds written so far, in order."""
        return [e.kind for e in self.events]


class FanOut:
    """Writes every event to several sinks, in the order given."""

    def __init__(self, *sinks: EventSink) -> None:
        self.sinks = sinks

    def write(self, event: EventBase) -> None:
        """Write to each sink."""
        for sink in self.sinks:
            sink.write(event)

    def flush(self, fsync: bool = False) -> None:
        """Flush each sink."""
        for sink in self.sinks:
            sink.flush(fsync)

    def close(self) -> None:
        """Close each sink; every sink is closed even if one fails, then the first error is raised."""
        error: BaseException | None = None
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # close the rest so no file is left unflushed
                error = error or exc
        if error is not None:
            raise error


class Emitter:
    """Stamps events with kind, seq, time, epoch and step, writes them, flushes on lifecycle kinds.

    The trainer keeps `epoch` and `step` current; `seq` continues from `start_seq` (use
    `runlog.last_seq` when resuming). Safe to call from several threads (the command server answers
    from its own): numbering and write order stay the same.
    """

    def __init__(self, sink: EventSink, start_seq: int = 0, clock: Callable[[], float] = time.time) -> None:
        self.sink = sink
        self.seq = start_seq
        self.clock = clock
        self.epoch = 0
        self.step = 0
        self._lock = threading.Lock()

    def emit(self, event_class: type[E], **fields: Any) -> E:
        """Build, stamp, write and return one event. Explicit `epoch`/`step` override the current ones."""
        with self._lock:
            fields.setdefault("epoch", self.epoch)
            fields.setdefault("step", self.step)
            # Validate before taking the number, so a bad event never leaves a gap in seq.
            event = event_class(seq=self.seq + 1, time=self.clock(), **fields)
            self.seq = event.seq
            self.sink.write(event)
            if event.kind in LIFECYCLE_KINDS:
                self.sink.flush()
            return event

    def flush(self, fsync: bool = False) -> None:
        """Flush the sink (the trainer calls `flush(fsync=True)` at every epoch end and on exit)."""
        with self._lock:
            self.sink.flush(fsync)

    def close(self) -> None:
        """Close the sink."""
        with self._lock:
            self.sink.close()
