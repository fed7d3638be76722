"""Plain progress lines for headless runs (`esper-tui train --headless`): an EventSink.

Owns only the wording of those lines: no colour, no emoji, readable in a batch job's log file.
Knows the event models; nothing about training, files or the dashboard.
"""

from __future__ import annotations

import sys
from typing import TextIO

from engine.telemetry.events import (
    CommandApplied,
    CommandRejected,
    ControllerDecision,
    EpochCompleted,
    EventBase,
    GovernorRollback,
    RunFailed,
    RunFinished,
    RunPaused,
    RunResumed,
    RunStarted,
    SlotReport,
    StageChanged,
    WarningEvent,
)
from engine.telemetry.safe_text import safe_text

NONE = "—"


def _num(value: float | None, fmt: str = ".3f") -> str:
    return NONE if value is None else format(value, fmt)


def _pct(value: float | None) -> str:
    # Accuracies are carried in percentage points already.
    return NONE if value is None else f"{value:.1f}%"


def _slot(report: SlotReport) -> str:
    if report.seed_id is None and report.blueprint is None:
        return f"{report.slot} {report.stage}"
    text = f"{report.slot} {report.stage} a={report.alpha:.2f} r={_num(report.grad_ratio, '.2f')}"
    if report.counterfactual is not None:
        text += f" cf={report.counterfactual:+.2f}"
    return text


def _command_name(command: dict) -> str:
    name = str(command.get("command", "?"))
    if "slot" in command:
        name += f" {command['slot']}"
    return name


class ProgressPrinter:
    """Prints one plain line per epoch and per notable event to `stream` (an EventSink)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.planned_epochs: int | None = None

    def format(self, event: EventBase) -> str | None:
        """The line for an event, or None for events a batch log does not need (metrics, gates …).

        Always one terminal-safe line: events come here straight from the engine, not through the
        log reader, and their strings can come from outside (an operator's reason, an exception's
        message), so control characters and newlines are written out as visible escapes.
        """
        line = self._line(event)
        return None if line is None else safe_text(line)

    def _line(self, event: EventBase) -> str | None:
        if isinstance(event, RunStarted):
            self.planned_epochs = event.planned_epochs
            iso = event.isolation
            detach = iso.get("blend_detach")
            blend = NONE if detach is None else ("detach" if detach else "no detach")
            return (
                f"run {event.run_id}{' (resumed)' if event.resumed else ''}: task {event.task}, "
                f"{event.topology} host on {event.device}, {event.planned_epochs} epochs, "
                f"slots {', '.join(event.slots) or NONE}; blending input: {blend} "
                f"({iso.get('source', NONE)})"
            )
        if isinstance(event, EpochCompleted):
            total = f"/{self.planned_epochs}" if self.planned_epochs else ""
            line = (
                f"epoch {event.epoch}{total}  train {_num(event.train_loss)}  val {_num(event.val_loss)}"
                f"  acc {_pct(event.val_accuracy)}"
            )
            if event.slots:
                line += "  | " + " | ".join(_slot(r) for r in event.slots)
            return line
        if isinstance(event, StageChanged):
            why = event.reason or (event.gate.reason if event.gate is not None else "")
            forced = " FORCED" if event.forced else ""
            return f"  {event.slot}: {event.from_stage} -> {event.to_stage}{forced} ({event.cause}: {why or NONE})"
        if isinstance(event, ControllerDecision):
            target = " ".join(x for x in (event.slot, event.blueprint) if x)
            return f"  autopilot: {event.action}{' ' + target if target else ''} ({event.reason or NONE})"
        if isinstance(event, CommandApplied):
            detail = f": {event.detail}" if event.detail else ""
            return f"  command {event.command_id} applied: {_command_name(event.command)}{detail}"
        if isinstance(event, CommandRejected):
            return f"  command {event.command_id} rejected: {_command_name(event.command)}: {event.reason}"
        if isinstance(event, GovernorRollback):
            culled = ", ".join(event.seeds_culled) or "none"
            return (
                f"  governor: {event.trigger} loss {_num(event.loss, '.4g')}, rolled back to epoch "
                f"{event.restored_epoch}; culled: {culled}"
            )
        if isinstance(event, WarningEvent):
            where = f" {event.slot}" if event.slot else ""
            return f"  warning [{event.code}]{where}: {event.message}"
        if isinstance(event, RunPaused):
            return f"  paused ({event.cause})"
        if isinstance(event, RunResumed):
            return f"  resumed ({event.cause})"
        if isinstance(event, RunFinished):
            final = "  ".join(f"{k} {_num(v, '.4g')}" for k, v in event.final.items())
            return f"run {event.status}" + (f": {final}" if final else "")
        if isinstance(event, RunFailed):
            return f"run failed: {event.error_type}: {event.message}"
        return None

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
