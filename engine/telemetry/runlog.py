"""The run log on disk: RUN_DIR/events.jsonl, one event per line. Reader and follower.

Owns the file format and crash tolerance on the reading side (the writer is in `logwriter`). Knows the event models, nothing about
training or the dashboard. Lines are parsed as data by pydantic, never evaluated.
"""

from __future__ import annotations

import gc
import os
import time
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from math import isfinite
from pathlib import Path
from typing import Callable, Iterator, Literal

from pydantic import ValidationError

from engine.telemetry.events import EVENT_ADAPTER, SCHEMA_VERSION, Event, RunStarted
from engine.telemetry.safe_text import clean_json_line

LOG_NAME = "events.jsonl"
_TAIL_CHUNK = 64 * 1024
_SCAN_CHUNK = 1 << 20  # the run_started search reads this much at a time
_RUN_STARTED = b'"run_started"'
_MAX_GAPS = 4096  # seq gaps remembered to tell a late line from a repeated one (see _SeqOrder)

MAX_LINE = 64 << 20
"""The longest line read as an event (64 MB). The engine writes nothing near it, so a longer line is
damage (or lost its newline): it is reported and skipped, never buffered without end."""

ProblemKind = Literal["truncated", "invalid", "too_long", "duplicate", "order", "schema", "time"]
SKIPPED_KINDS: frozenset[str] = frozenset({"truncated", "invalid", "too_long", "duplicate"})
"""Problems whose line is dropped; the others keep their (otherwise valid) event."""


class LogError(ValueError):
    """A run log line that cannot be read (raised only in strict mode)."""


@dataclass(frozen=True, slots=True)
class LogProblem:
    """One odd line of a run log: what is wrong with it and whether its event was skipped.

    Skipped: `truncated` (the last line, cut off by a crash), `invalid` (not an event), `too_long`
    (over MAX_LINE), `duplicate` (a seq read already: a repeated line; the first one counts).
    Kept, because the event itself is sound: `order` (a seq below an earlier line's: swapped
    lines), `schema` (a run_started of an unknown or missing schema_version), `time` (not finite:
    events are ordered by seq, and nothing reads `time` to decide anything).
    """

    line_no: int
    kind: ProblemKind
    message: str

    @property
    def skipped(self) -> bool:
        """Whether the line's event was dropped."""
        return self.kind in SKIPPED_KINDS

    def describe(self) -> str:
        """One line for a person: "line 4 skipped: …" or "line 7: …; the event is kept"."""
        if self.skipped:
            return f"line {self.line_no} skipped: {self.message}"
        return f"line {self.line_no}: {self.message}; the event is kept"


@dataclass(slots=True)
class LogRead:
    """What `read_events` found: the valid events in order, the odd lines, and how many events a
    resume superseded (dropped, so that every epoch shows once)."""

    events: list[Event] = field(default_factory=list)
    problems: list[LogProblem] = field(default_factory=list)
    superseded: int = 0

    @property
    def truncated(self) -> bool:
        """Whether the log ends in a partial line (the writer died mid-line)."""
        return any(p.kind == "truncated" for p in self.problems)


@dataclass(frozen=True, slots=True)
class Supersession:
    """The events one resume made obsolete: those with `after_seq` < seq < `before_seq` (the resume's
    own run_started), and, when the resume named only its checkpoint's epoch, epoch > `after_epoch`."""

    after_seq: int
    before_seq: int
    after_epoch: int | None = None

    def covers(self, seq: int, epoch: int) -> bool:
        """Whether an event with this seq and epoch is superseded by this resume."""
        return self.after_seq < seq < self.before_seq and (self.after_epoch is None or epoch > self.after_epoch)


def supersessions(starts: Iterable[RunStarted]) -> tuple[Supersession, ...]:
    """The rule of a resume, from a log's run_started events in log order.

    `--resume` goes on from the checkpoint of epoch E, so what the killed attempt wrote after that
    checkpoint is written again: a run_started R with `resumed_after_seq` S supersedes the events
    with S < seq < R.seq. An older R that names only `resumed_from_epoch` E supersedes the events of
    its attempt (after the previous run_started) with epoch > E. Seq keeps rising across a resume,
    so the ranges are exact. A later resume may supersede an earlier one's events, run_started too.
    """
    spans: list[Supersession] = []
    previous = 0
    for start in starts:
        if start.resumed_after_seq is not None:
            span = Supersession(start.resumed_after_seq, start.seq)
        elif start.resumed_from_epoch is not None:
            span = Supersession(previous, start.seq, start.resumed_from_epoch)
        else:
            span = None
        if span is not None and span.after_seq + 1 < span.before_seq and span not in spans:
            spans.append(span)
        previous = start.seq
    return tuple(spans)


def find_run_starts(path: str | os.PathLike[str]) -> list[RunStarted]:
    """The valid run_started events of a log (RUN_DIR or events.jsonl) in order, without a pass over
    its lines: a byte search for the kind, then only the lines it hits are read and parsed.

    This is what a reader needs to know before streaming, to drop superseded events as it goes.
    """
    log = resolve_log_path(path)
    found: list[RunStarted] = []
    with open(log, "rb") as f:
        fd = f.fileno()
        offset = 0
        while chunk := os.pread(fd, _SCAN_CHUNK, offset):
            hit = chunk.find(_RUN_STARTED)
            if hit < 0:
                if len(chunk) < _SCAN_CHUNK:
                    break
                offset += len(chunk) - len(_RUN_STARTED) + 1  # overlap: a kind cut by the chunk's end
                continue
            start, end = _line_around(fd, offset + hit)
            if end - start <= MAX_LINE:
                try:
                    event = parse_line(os.pread(fd, end - start, start))
                except ValidationError:
                    pass  # the main pass reports it; here it is just not a run_started
                else:
                    if event.kind == "run_started":
                        found.append(event)
            offset = end
    return found


def _line_around(fd: int, pos: int) -> tuple[int, int]:
    """The file offsets [start, end) of the line holding byte `pos`, its newline included."""
    start = pos
    while start > 0:
        size = min(_TAIL_CHUNK, start)
        cut = os.pread(fd, size, start - size).rfind(b"\n")
        if cut >= 0:
            start = start - size + cut + 1
            break
        start -= size
    end = pos
    while chunk := os.pread(fd, _TAIL_CHUNK, end):
        cut = chunk.find(b"\n")
        if cut >= 0:
            return start, end + cut + 1
        end += len(chunk)
    return start, end


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
    """One log line (bytes) → its validated event; raises pydantic.ValidationError.

    Every string in the event is terminal-safe (`safe_text`: control characters written as visible
    escapes), so a crafted log cannot drive the terminal of whoever replays or attaches to it.
    """
    # A control character can reach a decoded string only through a backslash escape (JSON forbids
    # raw C0), a raw DEL or a raw C1 character (UTF-8 lead byte 0xC2). Integer membership is a
    # memchr (~20 ns a scan, ~2 % of a parse), so clean lines keep the fast path; only lines with
    # one of those bytes are looked at closely (a traceback, say), and cleaned if they need it.
    if 0x5C in line or 0x7F in line or 0xC2 in line:
        line = clean_json_line(line)
    return EVENT_ADAPTER.validate_json(line)


def iter_events(
    path: str | os.PathLike[str], strict: bool = False, problems: list[LogProblem] | None = None
) -> Iterator[Event]:
    """Stream the valid events of a run log (RUN_DIR or events.jsonl) without holding them all.

    Same rules as `read_events` (superseded events are dropped too); odd lines are appended to
    `problems` when a list is given.
    """
    log = resolve_log_path(path)  # here, not in the generator, so a wrong path fails at the call
    return _iter_lines(log, strict, LogRead(problems=problems if problems is not None else []))


def _iter_lines(log: Path, strict: bool, read: LogRead) -> Iterator[Event]:
    # A first, cheap pass learns what the resumes superseded, so this one can drop it as it streams.
    spans = supersessions(find_run_starts(log))
    check = _LineCheck(read.problems, strict=strict, log=log, cut_tail=True)
    with open(log, "rb") as f:
        events = check.events(enumerate(f, 1))
        if not spans:
            yield from events
            return
        for event in events:
            if any(span.covers(event.seq, event.epoch) for span in spans):
                read.superseded += 1
                continue
            yield event


def read_events(path: str | os.PathLike[str], strict: bool = False) -> LogRead:
    """Read and validate a whole run log (RUN_DIR or events.jsonl).

    Blank lines are skipped. A partial last line (no newline, does not parse) is tolerated as a
    `truncated` problem. Every other odd line is reported with its 1-based number and handled as
    `LogProblem` says (skipped, or kept when its event is sound); with `strict=True` any of them
    raises LogError naming the file and line instead. Events a resume superseded are dropped and
    counted in `superseded`, so every epoch appears once.
    """
    out = LogRead()
    lines = _iter_lines(resolve_log_path(path), strict, out)
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


def _size(n: int) -> str:
    return f"{n >> 20} MB" if n >= 1 << 20 else f"{n:,} bytes"


class _SeqOrder:
    """Sorts each line's seq into next (above all so far), late (swapped lines) or repeated.

    Seq rises by one per line, so the usual case is one comparison, which `_LineCheck.events` makes
    inline; `place` is for the others. When seq jumps, the numbers it skipped are remembered as a gap (their lines were unreadable, or
    come later): a lower seq inside a gap is a late line, anywhere else it was read already. Only
    the newest `_MAX_GAPS` gaps are kept; below a forgotten one a lower seq counts as late, since it
    can no longer be proved a repeat (keeping an event beats dropping one).
    """

    def __init__(self) -> None:
        self.high = 0
        self._gaps: list[list[int]] = []  # [first, last] missing seqs, ascending, disjoint
        self._forgotten = 0

    def place(self, seq: int) -> Literal["next", "late", "repeat"]:
        """Record `seq` and say where it falls."""
        if seq > self.high:
            if seq > self.high + 1:
                self._gaps.append([self.high + 1, seq - 1])
                if len(self._gaps) > _MAX_GAPS:
                    drop = len(self._gaps) // 2
                    self._forgotten = self._gaps[drop - 1][1]
                    del self._gaps[:drop]
            self.high = seq
            return "next"
        i = bisect_right(self._gaps, seq, key=lambda gap: gap[0]) - 1
        if i >= 0 and seq <= self._gaps[i][1]:
            first, last = self._gaps[i]
            pieces = [g for g in ([first, seq - 1], [seq + 1, last]) if g[0] <= g[1]]
            self._gaps[i : i + 1] = pieces
            return "late"
        return "late" if seq <= self._forgotten else "repeat"


class _LineCheck:
    """Numbered lines → their events, skipping lines as `LogProblem` says; every odd line is noted.

    Shared by the reader and the follower, so a replay and a live dashboard report the same lines
    the same way. `cut_tail`: lines come with their newline, and one without it is the last line,
    cut off by a crash (the follower never hands over a line before its newline arrives).
    """

    def __init__(self, problems: list[LogProblem], *, strict: bool = False, log: Path | None = None,
                 cut_tail: bool = False, max_line: int = MAX_LINE) -> None:
        self.problems = problems
        self.strict = strict
        self.log = log
        self.cut_tail = cut_tail
        self.max_line = max_line
        self.order = _SeqOrder()

    def events(self, lines: Iterable[tuple[int, bytes]]) -> Iterator[Event]:
        """The events of `(line_no, line)` pairs, in order. One loop with the usual case in locals:
        it runs once per line of a 10^6-line log."""
        order, max_line = self.order, self.max_line
        for line_no, line in lines:
            if len(line) > max_line:
                self.too_long(line_no)
                continue
            try:
                event = parse_line(line)
            except ValidationError as exc:
                if line.strip():  # blank lines are harmless; checked only on failure to keep the loop lean
                    self._invalid(line_no, line, exc)
                continue
            seq = event.seq
            if seq == order.high + 1:
                order.high = seq
            elif self._odd_seq(line_no, seq):
                continue
            if not isfinite(event.time):
                self.note(line_no, "time", f"time is {event.time!r}, not Unix seconds (events are ordered by seq)")
            if event.kind == "run_started":
                self._schema(line_no, line, event)
            yield event

    def note(self, line_no: int, kind: ProblemKind, message: str) -> None:
        """Record a problem; in strict mode, refuse the log instead (a cut-off last line excepted)."""
        problem = LogProblem(line_no, kind, message)
        if self.strict and kind != "truncated":
            raise LogError(
                f"{self.log}: {problem.describe()}. --strict refuses a log with odd lines: read it "
                f"without --strict to have them skipped or kept as reported, or remove that line."
            )
        self.problems.append(problem)

    def too_long(self, line_no: int) -> None:
        """Report a line over `max_line` (the caller skips it)."""
        self.note(line_no, "too_long", f"longer than {_size(self.max_line)}, which no event is "
                                       "(damage, or a lost newline); skipped to its end")

    def _invalid(self, line_no: int, line: bytes, exc: ValidationError) -> None:
        message = _describe(exc)
        if self.cut_tail and not line.endswith(b"\n"):
            # Only the last line can lack its newline: the writer died mid-line. Tolerated.
            self.note(line_no, "truncated", f"last line is incomplete (the writer stopped mid-line): {message}")
        else:
            self.note(line_no, "invalid", f"not a valid event: {message}")

    def _odd_seq(self, line_no: int, seq: int) -> bool:
        """Place a seq that is not the next one; True if its line is to be skipped (a repeat)."""
        high = self.order.high
        place = self.order.place(seq)
        if place == "repeat":
            self.note(line_no, "duplicate", f"seq {seq} was read already (a repeated line; the first one counts)")
            return True
        if place == "late":
            self.note(line_no, "order", f"seq {seq} comes after seq {high} (lines out of order)")
        return False

    def _schema(self, line_no: int, line: bytes, event: RunStarted) -> None:
        if b'"schema_version"' not in line:
            self.note(line_no, "schema", f"run_started has no schema_version; read as version {SCHEMA_VERSION}")
        elif event.schema_version != SCHEMA_VERSION:
            self.note(line_no, "schema", f"run_started says schema_version {event.schema_version}, this "
                                         f"reader knows {SCHEMA_VERSION} (another version wrote it?); read "
                                         "as far as it goes")


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

    Keeps a byte offset; a partial last line is held back until its newline arrives, in pieces that
    are joined once, when it does (so a long line costs linear time over any number of polls), and
    only up to `max_line` bytes: a longer line is reported as `too_long` and skipped to its end. The
    file need not exist yet. Odd lines are handled and recorded in `problems` exactly as by
    `read_events`. If the file is replaced or shrinks (a new run reusing the path), reading starts
    again from its beginning. Superseded events are not dropped here: a follower cannot know what a
    later resume will supersede (see `supersessions`).
    """

    def __init__(self, path: str | os.PathLike[str], max_line: int = MAX_LINE) -> None:
        p = Path(path)
        self.path = p / LOG_NAME if p.is_dir() else p
        self.max_line = max_line
        self.problems: list[LogProblem] = []
        self._inode: int | None = None
        self._restart()

    def _restart(self) -> None:
        self.offset = 0
        self.line_no = 0
        self._pieces: list[bytes] = []  # the unfinished last line, as read
        self._held = 0
        self._dropping = False  # the unfinished line outgrew max_line: discard it up to its newline
        self._check = _LineCheck(self.problems, max_line=self.max_line)

    @property
    def pending_bytes(self) -> int:
        """Bytes of an unfinished last line held back (never more than `max_line`)."""
        return self._held

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
                self._restart()
            self._inode = st.st_ino
            f.seek(self.offset)
            data = f.read(-1 if max_bytes is None else max_bytes)
        if not data:
            return []
        self.offset += len(data)
        # Only the new bytes are searched for newlines; what was held is joined once, below.
        *lines, rest = data.split(b"\n")
        if lines and (self._pieces or self._dropping):
            lines[0] = b"" if self._dropping else b"".join([*self._pieces, lines[0]])  # b"": already reported
            self._pieces, self._held, self._dropping = [], 0, False
        events = list(self._check.events(enumerate(lines, self.line_no + 1)))
        self.line_no += len(lines)
        if rest and not self._dropping:
            self._pieces.append(rest)
            self._held += len(rest)
            if self._held > self.max_line:
                self._check.too_long(self.line_no + 1)
                self._pieces, self._held, self._dropping = [], 0, True
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
