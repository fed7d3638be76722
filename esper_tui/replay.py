"""ReplaySource: a saved run log played back one epoch at a time, with play/pause, speed, step and seek.

Feeds the same reducer and screens as a live run; commands are refused. Knows the event models and the
log reader; never Textual, never torch.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from engine.telemetry.events import Event
from engine.telemetry.runlog import LogError, LogProblem, iter_events, resolve_log_path
from esper_tui.sources import MAX_DRAIN, ProblemLines, SendResult
from esper_tui.status import Status


class ReplaySource:
    """Replays a finished (or crashed) run log, released one epoch at a time at a chosen speed.

    An "epoch" here is everything up to and including one epoch_completed event (the events after
    the last one, such as run_finished, form a final step). Events a resume superseded are dropped
    by the reader, so every epoch plays once. At speed s, one epoch is released every
    1/s seconds; speed 0 releases everything as fast as the UI drains. `start()` loads the log in a
    background thread (a 10⁶-event log plays while it loads); `load()` does it in the caller's thread.
    `clock` is injectable so tests can drive time.
    """

    def __init__(
        self,
        path: str | Path,
        speed: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_drain: int = MAX_DRAIN,
        strict: bool = False,
    ) -> None:
        self.path = resolve_log_path(path)  # a wrong path fails here, before any UI starts
        self.clock = clock
        self.max_drain = max_drain
        self.strict = strict
        self._speed = self._checked(speed)
        self._events: list[Event] = []
        self._ends: list[int] = []  # index just past each epoch_completed
        self._log_problems: list[LogProblem] = []
        self._problem_lines = ProblemLines(self._log_problems)
        self._load_error: str | None = None
        self._loaded = threading.Event()
        self._thread: threading.Thread | None = None
        self._playing = True
        self._sent = 0  # events handed to the app
        self._target = 0  # events due (released) so far; drain hands over up to here
        self._steps = 0  # epochs released so far
        self._next_due: float | None = None

    @staticmethod
    def _checked(speed: float) -> float:
        if not speed >= 0:
            raise ValueError(f"replay speed must be 0 (as fast as possible) or positive, not {speed}")
        return float(speed)

    # --- loading -------------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the whole log (valid events kept, odd lines recorded in `problems`). With `strict`,
        the first odd line stops the read, and `load_error` says which."""
        was_enabled = gc.isenabled()
        gc.disable()  # events hold no cycles; rescanning 10⁶ new objects would slow the read ~1.6x
        try:
            for i, event in enumerate(iter_events(self.path, self.strict, self._log_problems), 1):
                self._events.append(event)
                if event.kind == "epoch_completed":
                    self._ends.append(i)
        except LogError as exc:  # --strict: the message names the file and the line
            self._load_error = str(exc)
        except Exception as exc:  # noqa: BLE001 - shown as a problem; what was read still plays
            self._load_error = f"{type(exc).__name__}: {exc}"
        finally:
            if was_enabled:
                gc.enable()
            self._loaded.set()

    def start(self) -> None:
        """Load the log in a background thread (idempotent; no-op after `load()`)."""
        if self._thread is None and not self._loaded.is_set():
            self._thread = threading.Thread(target=self.load, name="esper-replay-load", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Nothing to release: the loader is a daemon thread."""
        self._playing = False

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Wait (up to `timeout` s) until the whole log is read; True if it is."""
        return self._loaded.wait(timeout)

    @property
    def loaded(self) -> bool:
        """Whether the whole log has been read."""
        return self._loaded.is_set()

    @property
    def load_error(self) -> str | None:
        """Why the read stopped before the end of the log (None if it did not)."""
        return self._load_error

    # --- pacing ------------------------------------------------------------------------------------

    def _step_count(self) -> int:
        """Epochs known so far (+1 for the tail after the last epoch_completed once loading is done)."""
        n = len(self._ends)
        if self._loaded.is_set() and len(self._events) > (self._ends[-1] if self._ends else 0):
            n += 1
        return n

    def _step_end(self, k: int) -> int:
        """Event index just past the k-th released step (1-based)."""
        return self._ends[k - 1] if k <= len(self._ends) else len(self._events)

    def _release(self) -> None:
        self._steps += 1
        self._target = self._step_end(self._steps)

    def drain(self) -> list[Event]:
        """The events released since the last drain (at most `max_drain`); releases the epochs now due."""
        now = self.clock()
        if self._playing:
            if self._speed == 0:
                while self._steps < self._step_count():
                    self._release()
            else:
                if self._next_due is None:
                    self._next_due = now
                while self._next_due <= now and self._steps < self._step_count():
                    self._release()
                    self._next_due += 1.0 / self._speed
                if self._next_due <= now:  # at the loaded end: no burst when more arrives later
                    self._next_due = now
        end = min(self._target, self._sent + self.max_drain)
        out = self._events[self._sent:end]
        self._sent = end
        return out

    def pause(self) -> None:
        """Stop releasing epochs (what was released is still drained)."""
        self._playing = False

    def play(self) -> None:
        """Release epochs again; the next one comes one interval from now."""
        if not self._playing:
            self._playing = True
            self._next_due = self.clock() + (1.0 / self._speed if self._speed else 0.0)

    def toggle(self) -> bool:
        """Pause if playing, play if paused; returns whether it now plays."""
        self.pause() if self._playing else self.play()
        return self._playing

    def set_speed(self, speed: float) -> None:
        """Epochs per second (0: as fast as possible); the next epoch comes one new interval from now."""
        self._speed = self._checked(speed)
        self._next_due = self.clock() + (1.0 / self._speed if self._speed else 0.0)

    def step(self) -> None:
        """Pause, and release the next epoch."""
        self._playing = False
        if self._steps < self._step_count():
            self._release()

    def step_event(self) -> None:
        """Pause, and release the next single event (an epoch's events one at a time)."""
        self._playing = False
        if self._target < len(self._events):
            self._target += 1
            while self._steps < self._step_count() and self._step_end(self._steps + 1) <= self._target:
                self._steps += 1

    def events_until(self, epoch: int) -> list[Event]:
        """All events up to and including the first epoch_completed with epoch >= `epoch` (0: none)."""
        return self._events[: self._step_end(self._steps_for(epoch))]

    def _steps_for(self, epoch: int) -> int:
        if epoch <= 0:
            return 0
        for k, end in enumerate(self._ends, 1):
            if self._events[end - 1].epoch >= epoch:
                return k
        return self._step_count()  # past the last epoch: the whole log

    def seek(self, epoch: int) -> list[Event]:
        """Move to the end of `epoch` and return every event up to there: the app rebuilds its state
        from scratch with them. Playing or paused stays as it was; drain continues after that point."""
        self._steps = self._steps_for(epoch)
        self._target = self._sent = self._step_end(self._steps) if self._steps else 0
        self._next_due = self.clock() + (1.0 / self._speed if self._speed else 0.0)
        return self._events[: self._sent]

    def seek_start(self) -> list[Event]:
        """Back to the start of the run: its run_started and nothing after (the slots and the config
        drawn, no epoch yet; never a blank screen). Playing on releases epoch 1 next."""
        self.seek(0)
        first = self._events[: self._step_end(1)] if self._events else []
        self._target = self._sent = next((i + 1 for i, e in enumerate(first) if e.kind == "run_started"), 0)
        return self._events[: self._sent]

    def seek_end(self) -> list[Event]:
        """Jump to the end of what is loaded; returns all of it."""
        self._steps = self._step_count()
        self._target = self._sent = self._step_end(self._steps) if self._steps else 0
        return self._events[: self._sent]

    # --- state the app shows -----------------------------------------------------------------------

    @property
    def playing(self) -> bool:
        return self._playing

    @property
    def speed(self) -> float:
        return self._speed

    @property
    def epoch(self) -> int:
        """The epoch of the last event released (what the screen shows once drained)."""
        return self._events[self._target - 1].epoch if self._target else 0

    @property
    def last_epoch(self) -> int:
        """The last completed epoch in the (loaded part of the) log."""
        return self._events[self._ends[-1] - 1].epoch if self._ends else 0

    @property
    def ending(self) -> str | None:
        """How the run ended, as its last event says: FINISHED, STOPPED or CRASHED; None while the
        log is loading or when it ends without a final event (the engine was killed)."""
        if not self._loaded.is_set() or not self._events:
            return None
        last = self._events[-1]
        if last.kind == "run_finished":
            return "FINISHED" if last.status == "completed" else "STOPPED"
        return "CRASHED" if last.kind == "run_failed" else None

    @property
    def at_end(self) -> bool:
        """Whether everything in the log has been released and drained."""
        return self._loaded.is_set() and self._sent >= len(self._events)

    @property
    def events(self) -> Sequence[Event]:
        """Every event loaded so far (read-only use)."""
        return self._events

    def status_hint(self) -> str | None:
        """The header's words: "REPLAY x2", "REPLAY MAX", "REPLAY PAUSED"; at the end, how the run
        ended ("STOPPED (replay)"), or "REPLAY END" for a log without a final event."""
        return str(Status.replay(playing=self._playing, speed=self._speed, at_end=self.at_end, ending=self.ending))

    @property
    def can_command(self) -> bool:
        return False

    def send(self, command_name: str, **fields: object) -> SendResult:
        return SendResult(False, None, "replay: commands are disabled")

    @property
    def problems(self) -> list[str]:
        out = self._problem_lines.update().texts
        return out + ([f"cannot read the rest of the log: {self._load_error}"] if self._load_error else [])

    @property
    def skipped_lines(self) -> int:
        """How many lines of the log could not be used."""
        return self._problem_lines.update().skipped

    @property
    def exit_code(self) -> int | None:
        return None

    def stderr_tail(self) -> str:
        return ""
