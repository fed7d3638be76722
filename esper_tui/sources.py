"""Where the dashboard's events come from: the RunSource protocol and its live kind (replay.py: ReplaySource).

Owns reading the run log for the UI (following a live one in a background thread, pacing a replay)
and sending operator commands. Knows the event and command models and the control socket; never
Textual (the app drains a source on its timer) and never torch (the engine is another process).
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from engine.commands import CommandError, new_command
from engine.control import ControlClient, ControlError, control_socket_path
from engine.telemetry.events import Event, RunStarted
from engine.telemetry.runlog import LogFollower, LogProblem, Supersession, find_run_starts, supersessions
from esper_tui.state import Restart

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

    def drain(self) -> list[Event | Restart]:
        """The events that arrived since the last drain, in order. Never blocks. A `Restart` among
        them means: what follows is the history again from the start (fold it into a new state)."""
        ...

    def send(self, command_name: str, **fields: object) -> SendResult: ...

    @property
    def can_command(self) -> bool: ...

    def status_hint(self) -> str | None:
        """A header status the log cannot tell ("CRASHED", "DETACHED", "REPLAY x2"), or None."""
        ...

    @property
    def problems(self) -> list[str]:
        """What went wrong reading the log, one line each, oldest first (the list only grows)."""
        ...

    @property
    def skipped_lines(self) -> int:
        """How many log lines could not be used (the header says so)."""
        ...

    @property
    def exit_code(self) -> int | None: ...

    def stderr_tail(self) -> str: ...


class ProcessLike(Protocol):
    """The part of `EngineProcess` a LiveSource watches."""

    def poll(self) -> int | None: ...

    def stderr_tail(self, n_chars: int = 4000) -> str: ...


def describe_problem(p: LogProblem) -> str:
    """A log problem as one line for the UI: "line 4 skipped: …"."""
    return p.describe()


class ProblemLines:
    """A reader's growing list of LogProblems as display lines, with how many skipped their line.

    The UI asks every tick, so only the problems new since the last call are described.
    """

    def __init__(self, problems: list[LogProblem]) -> None:
        self.source = problems
        self.texts: list[str] = []
        self.skipped = 0

    def update(self) -> ProblemLines:
        """Describe the problems added since the last call; returns self."""
        for problem in self.source[len(self.texts):]:
            self.texts.append(describe_problem(problem))
            self.skipped += problem.skipped
        return self


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

    Events a resume superseded are never handed over: the resumes already in the log are found
    before reading it, and when a new one supersedes events already handed over, the thread hands
    over a `Restart` and reads the log again from the start (a resume is rare), so the state built
    from `drain()` always equals folding the log without superseded events.
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
        self._problem_lines = ProblemLines(self._follower.problems)
        self._queue: deque[Event | Restart] = deque()  # appended by the thread, popped by drain(): no lock
        self._starts: dict[int, RunStarted] = {}  # the log's run_started events by seq (resumes)
        self._spans: tuple[Supersession, ...] = ()  # what they supersede
        self._scanned = False  # the resumes already in the log were looked for
        self._queued_high = 0  # the highest seq handed to the queue since the last (re)start
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

    def drain(self) -> list[Event | Restart]:
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
        """Odd log lines (skipped or kept, as each says) and reader errors, for display."""
        return self._problem_lines.update().texts + self._other_problems

    @property
    def skipped_lines(self) -> int:
        """How many lines of the log could not be used."""
        return self._problem_lines.update().skipped

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
        if not self._scanned and self._follower.path.exists():
            self._scanned = True
            self._learn(find_run_starts(self._follower.path))  # so the first read drops what they supersede
        before = self._follower.offset
        old = before < self._launch_offset
        # Slices stop at the launch offset, so no slice mixes an earlier run's events with this one's.
        size = min(_SLICE_BYTES, self._launch_offset - before) if old else _SLICE_BYTES
        events = self._follower.poll(max_bytes=size)
        if events and self._learn(events):
            self._restart()
            return True
        if events and self._spans:
            events = [e for e in events if not any(span.covers(e.seq, e.epoch) for span in self._spans)]
        if events:
            self._final = _is_final(events, self._final)
            if not old:
                self._own_final = _is_final(events, self._own_final)
            self._queued_high = max(self._queued_high, max(e.seq for e in events))
            self._queue.extend(events)
        return self._follower.offset - before >= size

    def _learn(self, events: Iterable[Event]) -> bool:
        """Note the resumes among `events`; True if one supersedes events already handed over."""
        new = [e for e in events if e.kind == "run_started" and e.seq not in self._starts]
        if not new:
            return False
        self._starts.update((e.seq, e) for e in new)
        spans = supersessions(self._starts[seq] for seq in sorted(self._starts))
        fresh = [span for span in spans if span not in self._spans]
        self._spans = spans
        return any(span.after_seq < self._queued_high for span in fresh)

    def _restart(self) -> None:
        """Read the log again from its start, now dropping what the new resume superseded."""
        self._follower = LogFollower(self._follower.path)
        self._problem_lines = ProblemLines(self._follower.problems)
        self._final = self._own_final = False
        self._queued_high = 0
        self._queue.append(Restart("a resume superseded events already shown"))

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


__all__ = ["CRASHED", "DETACHED", "MAX_DRAIN", "LiveSource", "ProblemLines", "RunSource", "SendResult"]
