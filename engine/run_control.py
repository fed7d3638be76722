"""Run control: pause, step one epoch, stop and pace — the run's clock as the operator steers it.

The trainer calls `safe_point` between optimizer steps and `epoch_ended` after each epoch. Both drain
the control socket: the run commands (pause, resume, step_epoch, stop) are answered here by
`execute`, every other command goes back to the trainer through `apply`, so each command is received,
applied and answered in the order it came. Torch-free.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from engine.commands import Command, PauseCommand, ResumeCommand, StepEpochCommand, StopCommand
from engine.control import CommandServer
from engine.decisions import Outcome
from engine.telemetry import events as ev

HEARTBEAT_S = 1.0


class StopRun(Exception):
    """Raised at a safe point when a stop was asked for: the loop ends, checkpoints, logs run_finished."""


class RunControl:
    """Whether the run is paused, stepping one epoch, stopping, and how long an epoch must last.

    `emit` logs an event, `flush` makes the log durable (a pause is on disk before the run waits),
    `apply` is the trainer's way of receiving, applying and answering one command.
    """

    def __init__(self, emit: Callable[..., Any], flush: Callable[[], None], apply: Callable[[Command], None],
                 min_epoch_seconds: float = 0.0) -> None:
        self.emit, self.flush, self.apply = emit, flush, apply
        self.min_epoch_seconds = min_epoch_seconds
        self.server: CommandServer | None = None
        self.paused = False
        self.pause_at_epoch: int | None = None  # step_epoch: pause again when this epoch is done
        self.stop_requested = False
        self.stop_cause = "operator"  # or the signal's name (SIGTERM)
        # Called about every HEARTBEAT_S while the run waits here (paused, pacing): a distributed
        # run's leader tells the other ranks it is still there, so their collectives never time out.
        self.tick: Callable[[], None] | None = None
        self._ticked = 0.0

    # ------------------------------------------------------------------ the operator's commands
    def execute(self, cmd: Command, epoch: int, in_epoch: bool) -> Outcome | None:
        """Answer a run command; None for a command that is not one (the trainer applies those).
        `epoch` is the epoch in progress (`in_epoch`) or the last one done."""
        match cmd:
            case PauseCommand():
                if self.paused:
                    return Outcome.refused("the run is already paused")
                self.pause("operator")
            case ResumeCommand():
                if not self.paused:
                    return Outcome.refused("the run is not paused")
                self.paused = False
                self.emit(ev.RunResumed, cause="operator")
            case StepEpochCommand():
                if not self.paused:
                    return Outcome.refused("step_epoch works while paused; pause first")
                self.paused = False
                # One epoch: the one in progress if paused inside it, else the next. (Paused after an
                # epoch's end, e.g. while pacing, "after this epoch" would pause again at once.)
                self.pause_at_epoch = epoch if in_epoch else epoch + 1
                self.emit(ev.RunResumed, cause="step_epoch")
            case StopCommand():
                self.stop("operator")
            case _:
                return None
        return Outcome.done()

    def pause(self, cause: str) -> None:
        if not self.paused:
            self.paused = True
            self.flush()
            self.emit(ev.RunPaused, cause=cause)

    def stop(self, cause: str) -> None:
        """Ask the run to stop at its next safe point (safe to call from a signal handler)."""
        self.stop_requested = True
        self.stop_cause = cause

    # ------------------------------------------------------------------ the loop's questions
    def has_pending(self) -> bool:
        """Whether a command waits (cheap: asked at every step)."""
        return self.server is not None and self.server.has_pending()

    def safe_point(self) -> None:
        """Apply the queued commands; wait here while paused. Raises StopRun when stopping."""
        if self.server is not None:
            self._drain()
            while self.paused and not self.stop_requested:
                if self.server.wait_for_command(0.1):
                    self._drain()
                self._heartbeat()
        if self.stop_requested:
            raise StopRun

    def epoch_ended(self, epoch: int, started: float) -> None:
        """After an epoch: stretch it to the pace (applying commands meanwhile), then pause again if
        this was the epoch a step_epoch asked for."""
        deadline = started + self.min_epoch_seconds
        while self.server is not None and not self.stop_requested:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            if self.server.wait_for_command(min(left, 0.1)):
                self.safe_point()
            self._heartbeat()
        if self.server is None and deadline > time.perf_counter():
            time.sleep(deadline - time.perf_counter())
        if self.pause_at_epoch is not None and epoch >= self.pause_at_epoch:
            self.pause_at_epoch = None
            self.pause("step_epoch")

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if self.tick is not None and now - self._ticked >= HEARTBEAT_S:
            self._ticked = now
            self.tick()

    def _drain(self) -> None:
        assert self.server is not None
        for command in self.server.drain():
            self.apply(command)
