"""Where the dashboard's events come from: the RunSource protocol and its live, replay and static kinds.

Owns reading the run log for the UI (following a live one in a background thread, pacing a replay)
and sending operator commands. Knows the event and command models and the control socket; never
Textual (the app drains a source on its timer) and never torch (the engine is another process).
"""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from engine.commands import CommandError, new_command
from engine.control import ControlClient, ControlError, control_socket_path
from engine.telemetry.events import Event
from engine.telemetry.runlog import LogFollower, LogProblem, iter_events, resolve_log_path

MAX_DRAIN = 20_000  # events handed over per drain, so one UI tick never folds a million at once
_SLICE_BYTES = 4 << 20  # one log read while catching up (~10k events)
_FINAL_KINDS = frozenset({"run_finished", "run_failed"})
CRASHED, DETACHED = "CRASHED", "DETACHED"


@dataclass(frozen=True, slots=True)
class SendResult:
    """The socket's immediate answer: received (`ok`, with the command's id) or why not (`error`).

    The engine's decision arrives later in the log as command_applied / command_rejected with that id.
    """

    ok: bool
    command_id: str | None = None
    error: str | None = None


@runtime_checkable
class RunSource(Protocol):
    """What the app needs from a run: events in order, commands, and how the run is doing."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def drain(self) -> list[Event]:
        """The events that arrived since the last drain, in order. Never blocks."""
        ...

    def send(self, command_name: str, **fields: object) -> SendResult: ...

    @property
    def can_command(self) -> bool: ...

    def status_hint(self) -> str | None:
        """A header status the log cannot tell ("CRASHED", "DETACHED", "REPLAY x2"), or None."""
        ...

    @property
    def problems(self) -> list[str]: ...

    @property
    def exit_code(self) -> int | None: ...

    def stderr_tail(self) -> str: ...


class ProcessLike(Protocol):
    """The part of `EngineProcess` a LiveSource watches."""

    def poll(self) -> int | None: ...

    def stderr_tail(self, n_chars: int = 4000) -> str: ...


def _describe_problem(p: LogProblem) -> str:
    return f"events.jsonl line {p.line_no}: {p.message}"


def _is_final(events: Iterable[Event], final: bool) -> bool:
    """Whether the log now ends a run (a later run_started, i.e. a resume, reopens it)."""
    for e in events:
        if e.kind in _FINAL_KINDS:
            final = True
        elif e.kind == "run_started":
            final = False
    return final


class LiveSource:
    """Follows RUN_DIR/events.jsonl of a running engine and sends it commands over RUN_DIR/control.sock.

    A daemon thread reads the whole existing log first (attach shows the full history), then polls
    for new lines; it does all parsing, so `drain()` only hands events over. With a `process`, the
    thread also watches it: an exit without run_finished/run_failed in the log is a crash. Without one
    (attach), the control socket is probed every `probe_interval` seconds: nobody answering while
    the log has no final event means the engine was killed (DETACHED).
    """

    def __init__(
        self,
        run_dir: str | Path,
        process: ProcessLike | None = None,
        *,
        poll_interval: float = 0.1,
        probe_interval: float = 2.0,
        max_drain: int = MAX_DRAIN,
        send_timeout: float = 2.0,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.process = process
        self.poll_interval = poll_interval
        self.probe_interval = probe_interval
        self.max_drain = max_drain
        self.send_timeout = send_timeout
        self._follower = LogFollower(self.run_dir)
        self._queue: deque[Event] = deque()  # appended by the thread, popped by drain(): no lock needed
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: ControlClient | None = None
        self._client_lock = threading.Lock()
        self._other_problems: list[str] = []
        self._final = False  # the log read so far ends a run
        self._own_final = False  # ... and that end was written after `process` was launched
        # With a process (launched just before this source), the log may hold an earlier run's
        # history (--resume): only events past this offset can tell how *this* launch ended.
        self._launch_offset = self._log_size() if process is not None else 0
        self._caught_up = False
        self._exit_code: int | None = None
        self._socket_dead = False
        try:
            self._socket_path: Path | None = control_socket_path(self.run_dir)
            self._path_error: str | None = None
        except ControlError as exc:
            self._socket_path, self._path_error = None, str(exc)

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the follower thread (idempotent)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="esper-live-source", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following (returns within ~0.2 s) and close the command connection. The engine keeps running."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # --- what the app reads ------------------------------------------------------------------------

    def drain(self) -> list[Event]:
        """Up to `max_drain` events read since the last drain, in order; [] when none. Never blocks."""
        q = self._queue
        n = min(len(q), self.max_drain)
        return [q.popleft() for _ in range(n)]

    @property
    def backlog(self) -> int:
        """Events read but not drained yet (drain again soon when this is large)."""
        return len(self._queue)

    @property
    def caught_up(self) -> bool:
        """Whether the thread has read the log to its current end at least once."""
        return self._caught_up

    @property
    def problems(self) -> list[str]:
        """Unreadable log lines (skipped) and reader errors, for display."""
        return [_describe_problem(p) for p in list(self._follower.problems)] + list(self._other_problems)

    @property
    def exit_code(self) -> int | None:
        """The engine's exit code once it has exited (only known with a process)."""
        return self._exit_code

    @property
    def finished(self) -> bool:
        """Whether the log read so far ends with run_finished or run_failed."""
        return self._final

    @property
    def can_command(self) -> bool:
        """Whether a command could reach an engine now (socket path usable, engine not known gone)."""
        if self._socket_path is None or self._final or self._exit_code is not None:
            return False
        return not (self.process is None and self._socket_dead)

    def status_hint(self) -> str | None:
        """"CRASHED" (process exited, log has no final event), "DETACHED" (attached, nobody answers), or None."""
        if self.process is not None:
            return CRASHED if self._exit_code is not None and not self._own_final else None
        if self._final:
            return None
        return DETACHED if self._socket_dead else None

    def stderr_tail(self) -> str:
        """The engine process's recent stderr ("" when attached without a process)."""
        return self.process.stderr_tail() if self.process is not None else ""

    # --- commands ----------------------------------------------------------------------------------

    def send(self, command_name: str, **fields: object) -> SendResult:
        """Build `command_name` with a fresh id and send it; never raises.

        Blocks for one local round trip (the engine's server answers from its own thread, so
        milliseconds), at most `send_timeout` seconds.
        """
        try:
            cmd = new_command(command_name, **fields)
        except CommandError as exc:
            return SendResult(False, exc.command_id, str(exc))
        if self._path_error is not None:
            return SendResult(False, cmd.id, self._path_error)
        try:
            with self._client_lock:
                if self._client is None:
                    self._client = ControlClient(self.run_dir, timeout=self.send_timeout)
                client = self._client
            reply = client.send(cmd)
        except (ControlError, OSError, ValueError) as exc:
            return SendResult(False, cmd.id, str(exc))
        ok = reply.get("ok") is True
        error = None if ok else str(reply.get("error") or "the engine refused the command")
        return SendResult(ok, str(reply.get("id") or cmd.id), error)

    # --- the follower thread -------------------------------------------------------------------------

    def _run(self) -> None:
        next_probe = 0.0
        while not self._stopping.is_set():
            try:
                more = self._read()
                if not more:
                    self._caught_up = True
                if self.process is not None and self._exit_code is None:
                    self._watch_process()
                elif self.process is None and self._caught_up and time.monotonic() >= next_probe:
                    next_probe = time.monotonic() + self.probe_interval
                    self._probe()
            except Exception as exc:  # noqa: BLE001 - keep following; show the reason once
                message = f"log reader: {type(exc).__name__}: {exc}"
                if message not in self._other_problems:
                    self._other_problems.append(message)
                more = False
            if not more:
                self._stopping.wait(self.poll_interval)  # timed: stop() wakes it at once

    def _log_size(self) -> int:
        try:
            return self._follower.path.stat().st_size
        except OSError:
            return 0

    def _read(self) -> bool:
        """One slice of new events into the queue; True if the slice was full (more is waiting)."""
        before = self._follower.offset
        old = before < self._launch_offset
        # Slices stop at the launch offset, so no slice mixes an earlier run's events with this one's.
        size = min(_SLICE_BYTES, self._launch_offset - before) if old else _SLICE_BYTES
        events = self._follower.poll(max_bytes=size)
        if events:
            self._final = _is_final(events, self._final)
            if not old:
                self._own_final = _is_final(events, self._own_final)
            self._queue.extend(events)
        return self._follower.offset - before >= size

    def _watch_process(self) -> None:
        assert self.process is not None
        code = self.process.poll()
        if code is None:
            return
        # The engine closes its log before exiting: read to the end before judging the exit.
        while self._read() and not self._stopping.is_set():
            pass
        self._exit_code = code

    def _probe(self) -> None:
        if self._final or self._socket_path is None:
            self._socket_dead = False
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(0.5)
        try:
            sock.connect(str(self._socket_path))
            self._socket_dead = False
        except (FileNotFoundError, ConnectionRefusedError):
            self._socket_dead = True  # no socket, or a stale one left by a killed engine
        except OSError:
            pass  # e.g. a busy backlog: not evidence either way
        finally:
            sock.close()


class ReplaySource:
    """Replays a finished (or crashed) run log, released one epoch at a time at a chosen speed.

    An "epoch" here is everything up to and including one epoch_completed event (the events after
    the last one, such as run_finished, form a final step). At speed s, one epoch is released every
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
        """Read the whole log (valid events kept, bad lines recorded in `problems`)."""
        was_enabled = gc.isenabled()
        gc.disable()  # events hold no cycles; rescanning 10⁶ new objects would slow the read ~1.6x
        try:
            for i, event in enumerate(iter_events(self.path, self.strict, self._log_problems), 1):
                self._events.append(event)
                if event.kind == "epoch_completed":
                    self._ends.append(i)
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
        """Back to before the first event (returns []; the app starts from an empty state)."""
        return self.seek(0)

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
    def at_end(self) -> bool:
        """Whether everything in the log has been released and drained."""
        return self._loaded.is_set() and self._sent >= len(self._events)

    @property
    def events(self) -> Sequence[Event]:
        """Every event loaded so far (read-only use)."""
        return self._events

    def status_hint(self) -> str | None:
        """"REPLAY x2", "REPLAY MAX", "REPLAY PAUSED" or "REPLAY END"."""
        if self.at_end:
            return "REPLAY END"
        if not self._playing:
            return "REPLAY PAUSED"
        return "REPLAY MAX" if self._speed == 0 else f"REPLAY x{self._speed:g}"

    @property
    def can_command(self) -> bool:
        return False

    def send(self, command_name: str, **fields: object) -> SendResult:
        return SendResult(False, None, "replay: commands are disabled")

    @property
    def problems(self) -> list[str]:
        out = [_describe_problem(p) for p in list(self._log_problems)]
        return out + ([f"cannot read the rest of the log: {self._load_error}"] if self._load_error else [])

    @property
    def exit_code(self) -> int | None:
        return None

    def stderr_tail(self) -> str:
        return ""


class StaticSource:
    """A fixed list of events, all handed over on the first drain (snapshot tests, previews)."""

    def __init__(self, events: Iterable[Event], *, status: str | None = None, problems: Iterable[str] = ()) -> None:
        self._events = list(events)
        self._status = status
        self._problems = list(problems)
        self._drained = False

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def drain(self) -> list[Event]:
        if self._drained:
            return []
        self._drained = True
        return list(self._events)

    def send(self, command_name: str, **fields: object) -> SendResult:
        return SendResult(False, None, "static: commands are disabled")

    @property
    def can_command(self) -> bool:
        return False

    def status_hint(self) -> str | None:
        return self._status

    @property
    def problems(self) -> list[str]:
        return list(self._problems)

    @property
    def exit_code(self) -> int | None:
        return None

    def stderr_tail(self) -> str:
        return ""


__all__ = ["CRASHED", "DETACHED", "MAX_DRAIN", "LiveSource", "ReplaySource", "RunSource", "SendResult", "StaticSource"]
