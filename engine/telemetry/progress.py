"""Plain progress lines for headless runs (`esper-tui train --headless`): an EventSink.

Owns which events get a line and how the lines sit (the words are `describe`'s, shared with the
dashboard): no colour, no emoji, readable in a batch job's log file. Nothing about training or files.
"""

from __future__ import annotations

import sys
from typing import TextIO

from engine.telemetry.describe import describe
from engine.telemetry.events import EventBase, RunStarted
from engine.telemetry.safe_text import safe_text

# A batch log needs the epoch lines and what changed, not every step, gate verdict or queued command
# (the answer follows), nor the autopilot's running commentary (it changes every epoch).
SKIPPED_KINDS = frozenset({"step_metrics", "gate_evaluated", "command_received", "autopilot_waiting"})
# Lines about the run as a whole start at the margin; the events within an epoch are indented under it.
MARGIN_KINDS = frozenset({"run_started", "run_finished", "run_failed", "epoch_completed"})


class ProgressPrinter:
    """Prints one plain line per epoch and per notable event to `stream` (an EventSink).

    The words are `engine.telemetry.describe`'s, the same the dashboard's event log shows.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.planned_epochs: int | None = None

    def format(self, event: EventBase) -> str | None:
        """The line for an event, or None for events a batch log does not need (metrics, gates …).

        Always one terminal-safe line: events come here straight from the engine, not through the
        log reader, and their strings can come from outside (an operator's reason, an exception's
        message), so control characters and newlines are written out as visible escapes.
        """
        if isinstance(event, RunStarted):
            self.planned_epochs = event.planned_epochs
        if event.kind in SKIPPED_KINDS:
            return None
        line = describe(event, planned_epochs=self.planned_epochs)
        if line is None:
            return None
        indent = "" if event.kind in MARGIN_KINDS else "  "
        return safe_text(indent + line.text)

    def write(self, event: EventBase) -> None:
        """Print the event's line, if it has one. Flushed at once: these lines are rare and awaited."""
        line = self.format(event)
        if line is not None:
            self.stream.write(line + "\n")
            self.stream.flush()

    def flush(self, fsync: bool = False) -> None:
        """Flush the stream (fsync does not apply to a terminal)."""
        self.stream.flush()

    def close(self) -> None:
        """Flush; the stream belongs to the caller and stays open."""
        self.stream.flush()
