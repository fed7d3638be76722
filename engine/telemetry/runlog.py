"""The run log on disk: RUN_DIR/events.jsonl, one event per line. Reader and follower.

Owns the file format and crash tolerance on the reading side (the writer is in `logwriter`). Knows the event models, nothing about
training or the dashboard. Lines are parsed as data by pydantic, never evaluated.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal

from pydantic import ValidationError

from engine.telemetry.events import EVENT_ADAPTER, Event

LOG_NAME = "events.jsonl"
_TAIL_CHUNK = 64 * 1024


class LogError(ValueError):
    """A run log line that cannot be read (raised only in strict mode)."""


@dataclass(frozen=True, slots=True)
class LogProblem:
    """One unreadable line: `truncated` (the last line, cut off by a crash) or `invalid`."""

    line_no: int
    kind: Literal["truncated", "invalid"]
    message: str


@dataclass(slots=True)
class LogRead:
    """What `read_events` found: the valid events in order and the lines it had to skip."""

    events: list[Event] = field(default_factory=list)
    problems: list[LogProblem] = field(default_factory=list)

    @property
    def truncated(self) -> bool:
        """Whether the log ends in a partial line (the writer died mid-line)."""
        return any(p.kind == "truncated" for p in self.problems)


def resolve_log_path(path: str | os.PathLike[str]) -> Path:
    """A run directory → its events.jsonl; a file path → itself. Raises FileNotFoundError if missing."""
    p = Path(path)
    candidate = p / LOG_NAME if p.is_dir() else p
    if not candidate.is_file():
        if p.is_dir():
            raise FileNotFoundError(f"{p} is a directory but holds no {LOG_NAME}: is it a run directory?")
        raise FileNotFoundError(f"no run log at {p}: give a run directory or the path of its {LOG_NAME}")
    return candidate


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(exc: ValidationError) -> str:
    """A short, safe description of why a line failed: location and message, no echo of long input."""
    parts = []
    for err in exc.errors(include_url=False)[:3]:
        if err["type"] == "union_tag_invalid":
            tag = _shorten(str(err.get("ctx", {}).get("tag", "?")), 60)
            parts.append(f"unknown kind {tag!r} (not one of EVENT_KINDS; written by a newer version?)")
            continue
        loc = ".".join(str(x) for x in err["loc"])
        msg = _shorten(err["msg"], 200)
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def parse_line(line: bytes) -> Event:
    """One log line (bytes) → its validated event; raises pydantic.ValidationError."""
    return EVENT_ADAPTER.validate_json(line)


def iter_events(
    path: str | os.PathLike[str], strict: bool = False, problems: list[LogProblem] | None = None
) -> Iterator[Event]:
    """Stream the valid events of a run log (RUN_DIR or events.jsonl) without holding them all.

    Same rules as `read_events`; skipped lines are appended to `problems` when a list is given.
    """
    log = resolve_log_path(path)  # here, not in the generator, so a wrong path fails at the call
    return _iter_lines(log, strict, problems if problems is not None else [])


def _iter_lines(log: Path, strict: bool, found: list[LogProblem]) -> Iterator[Event]:
    with open(log, "rb") as f:
        for line_no, line in enumerate(f, 1):
            try:
                yield parse_line(line)
            except ValidationError as exc:
                if not line.strip():
                    continue  # blank lines are harmless; checked only on failure to keep the loop lean
                message = _describe(exc)
                if not line.endswith(b"\n"):
                    # Only the last line can lack its newline: the writer died mid-line. Tolerated.
                    why = f"last line is incomplete (the writer stopped mid-line): {message}"
                    found.append(LogProblem(line_no, "truncated", why))
                    return
                if strict:
                    raise LogError(
                        f"{log}: line {line_no} is not a valid event ({message}). The run log is damaged "
                        f"there; read it without --strict to skip bad lines, or remove that line."
                    ) from None
                found.append(LogProblem(line_no, "invalid", message))


def read_events(path: str | os.PathLike[str], strict: bool = False) -> LogRead:
    """Read and validate a whole run log (RUN_DIR or events.jsonl).

    Blank lines are skipped. A partial last line (no newline, does not parse) is tolerated as a
    `truncated` problem. Any other bad line is skipped and reported with its 1-based number; with
    `strict=True` it raises LogError naming the file and line instead.
    """
    out = LogRead()
    lines = iter_events(path, strict, out.problems)
    # Holding 10^6 new objects makes the cyclic GC rescan them again and again (measured: read
    # time ~1.6x). Events hold no reference cycles, so collection can wait until the read is done.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        out.events.extend(lines)
    finally:
        if was_enabled:
            gc.enable()
    return out


def last_seq(path: str | os.PathLike[str]) -> int:
    """The seq of the last valid event in a log (0 if the file is missing or has none).

    Reads backwards from the end in growing chunks, so it is fast on a log of any length.
    """
    p = Path(path)
    if p.is_dir():
        p = p / LOG_NAME
    try:
        f = open(p, "rb")
    except FileNotFoundError:
        return 0
    with f:
        size = f.seek(0, os.SEEK_END)
        window = _TAIL_CHUNK
        while True:
            start = max(0, size - window)
            f.seek(start)
            lines = f.read(size - start).split(b"\n")
            if start > 0:
                lines = lines[1:]  # the first piece may begin mid-line
            for line in reversed(lines):
                if line.strip():
                    try:
                        return parse_line(line).seq
                    except ValidationError:
                        continue
            if start == 0:
                return 0
            window *= 4


class LogFollower:
    """Tails a run log that is still being written: `poll()` returns the new complete events.

    Keeps a byte offset; a partial last line is held back until its newline arrives. The file need
    not exist yet. Invalid complete lines are skipped and recorded in `problems`. If the file is
    replaced or shrinks (a new run reusing the path), reading starts again from its beginning.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        self.path = p / LOG_NAME if p.is_dir() else p
        self.problems: list[LogProblem] = []
        self.offset = 0
        self.line_no = 0
        self._pending = b""
        self._inode: int | None = None

    def poll(self, max_bytes: int | None = None) -> list[Event]:
        """The events completed since the last poll (possibly none). Never blocks.

        `max_bytes` bounds one poll's read, so attaching to a long log can be done in slices
        (the rest comes on the next polls).
        """
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return []
        with f:
            st = os.fstat(f.fileno())
            if self._inode is not None and (st.st_ino != self._inode or st.st_size < self.offset):
                self.offset, self.line_no, self._pending = 0, 0, b""
            self._inode = st.st_ino
            f.seek(self.offset)
            data = f.read(-1 if max_bytes is None else max_bytes)
        if not data:
            return []
        self.offset += len(data)
        *lines, self._pending = (self._pending + data).split(b"\n")
        events: list[Event] = []
        for line in lines:
            self.line_no += 1
            try:
                events.append(parse_line(line))
            except ValidationError as exc:
                if line.strip():
                    self.problems.append(LogProblem(self.line_no, "invalid", _describe(exc)))
        return events


def follow(
    path: str | os.PathLike[str],
    stop: Callable[[], bool],
    interval: float = 0.1,
    follower: LogFollower | None = None,
) -> Iterator[list[Event]]:
    """Yield non-empty batches of new events until `stop()` returns True.

    Waits in short timed sleeps and checks `stop()` between them, so it can always be cancelled.
    Pass your own `follower` to read its `problems`.
    """
    follower = follower or LogFollower(path)
    tick = min(interval, 0.05)
    while True:
        batch = follower.poll()
        if batch:
            yield batch
        if stop():
            return
        deadline = time.monotonic() + interval
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(tick, left))
            if stop():
                break
