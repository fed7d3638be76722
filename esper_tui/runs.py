"""The runs under a directory (default ./runs): find them and say what each is, cheaply.

For `esper-tui runs` (a plain-text table) and `esper-tui attach` without a path (the newest live run,
or a picker). Pure file reading: no Textual, no torch, nothing written.

What a run is doing comes from two places, never from guessing at process ids:

- live: an engine holds the exclusive `flock` on RUN_DIR/engine.lock (engine/rundir.py). A
  non-blocking shared lock attempt, released at once, tells without disturbing it.
- otherwise the log's last valid event: run_finished (completed → finished, stopped → stopped),
  run_failed → crashed; a log that just ends, with nobody holding the lock, was killed → crashed.

A log is never read whole unless it is small: its first line is the first run_started (task,
planned epochs, start time) and its tail holds the last events. Logs up to `SMALL_LOG` bytes are
scanned for every epoch_completed line, so the best validation accuracy is exact (epochs a resume
superseded left out). A bigger log has only its last `TAIL_BYTES` read: its best is the best of those
epochs, and `RunInfo.best_exact` says so. Every string taken from a log (or a directory name) is
terminal-safe (`safe_text`).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from engine.rundir import LOCK_NAME
from engine.telemetry.events import Event, RunStarted
from engine.telemetry.runlog import LOG_NAME, parse_line, supersessions
from engine.telemetry.safe_text import safe_text

RUNS_DIR = Path("runs")
SMALL_LOG = 4 << 20  # ~1700 digits epochs: scanned whole in a few ms
TAIL_BYTES = 1 << 20  # what is read of a bigger log: several hundred epochs' lines
_FIRST_LINE_MAX = 1 << 20  # a run_started line (its config, blueprints) is a few KB
_HEAD_CHUNK = 16 << 10
_EPOCH_KIND = b'"epoch_completed"'
_START_KIND = b'"run_started"'
_FINISHED = {"completed": "finished", "stopped": "stopped"}
DASH = "-"  # plain ASCII: the table is for pipes and grep too

Status = Literal["live", "finished", "stopped", "crashed", "unknown"]
STATUSES: tuple[Status, ...] = ("live", "finished", "stopped", "crashed", "unknown")


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What one run directory holds, as `esper-tui runs` shows it. Strings are terminal-safe."""

    path: Path
    status: Status
    task: str | None = None
    epoch: int | None = None  # epochs completed
    planned: int | None = None  # epochs planned (the newest run_started read says)
    best_accuracy: float | None = None  # best val accuracy, in percent
    best_exact: bool = True  # False: a big log, only its tail's epochs were looked at
    started: float | None = None  # the first run_started's time (Unix seconds)
    sort_time: float = 0.0  # started, or the directory's mtime when the log does not say

    @property
    def name(self) -> str:
        """The run directory's name, terminal-safe."""
        return safe_text(self.path.name)


@dataclass(slots=True)
class _Scan:
    """What the lines read of a log say (a whole small log, or a big one's tail)."""

    starts: list[RunStarted] = field(default_factory=list)
    epochs: list[tuple[int, int, float | None]] = field(default_factory=list)  # (seq, epoch, val accuracy)
    last: Event | None = None


# ------------------------------------------------------------------------------------------ status
def lock_held(run_dir: str | os.PathLike[str]) -> bool | None:
    """Whether an engine holds RUN_DIR/engine.lock now; None when that cannot be told (unreadable).

    A shared, non-blocking `flock` fails only while an engine holds its exclusive one; when it
    succeeds it is let go at once (closing the file), so an engine starting meanwhile is not stopped
    for longer than this call. Links are not followed: a linked lock file is no engine's.
    """
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)  # releases the shared lock, if it was granted
    return False


def _status(live: bool | None, last: Event | None) -> Status:
    if live:
        return "live"
    if last is not None and last.kind == "run_finished":
        return _FINISHED.get(last.status, "unknown")  # type: ignore[return-value]
    if last is not None and last.kind == "run_failed":
        return "crashed"
    if last is None or live is None:
        return "unknown"
    return "crashed"  # the log just ends and nobody holds the lock: the engine was killed


# ------------------------------------------------------------------------------------------ reading
def _first_start(fd: int) -> RunStarted | None:
    """The run_started on the log's first line, if that is what it holds (read up to its newline)."""
    head = b""
    while b"\n" not in head and len(head) < _FIRST_LINE_MAX:
        chunk = os.pread(fd, _HEAD_CHUNK, len(head))
        if not chunk:
            break
        head += chunk
    event = _event(head.split(b"\n", 1)[0])
    return event if event is not None and event.kind == "run_started" else None


def _event(line: bytes) -> Event | None:
    if not line.strip():
        return None
    try:
        return parse_line(line)
    except ValidationError:
        return None


def _epoch_line(line: bytes) -> tuple[int, int, float | None] | None:
    """(seq, epoch, val_accuracy) of an epoch_completed line; plain JSON, only numbers are kept."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("kind") != "epoch_completed":
        return None
    seq, epoch, acc = data.get("seq"), data.get("epoch"), data.get("val_accuracy")
    if not (_is_int(seq) and _is_int(epoch)):
        return None
    return seq, epoch, float(acc) if _is_number(acc) and math.isfinite(acc) else None


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _scan(lines: Sequence[bytes]) -> _Scan:
    """The run_started and epoch_completed lines among `lines`, and the last valid event.

    Only lines naming one of those kinds are parsed (a byte search picks them), so a scan costs
    little more than reading the bytes.
    """
    out = _Scan()
    for line in lines:
        if _EPOCH_KIND in line:
            if (found := _epoch_line(line)) is not None:
                out.epochs.append(found)
        elif _START_KIND in line:
            event = _event(line)
            if event is not None and event.kind == "run_started":
                out.starts.append(event)
    for line in reversed(lines):
        if (event := _event(line)) is not None:
            out.last = event
            break
    return out


def _read_log(fd: int) -> tuple[_Scan, RunStarted | None, bool]:
    """Scan a log: all of a small one, or the whole lines of a big one's tail (and its first line).

    Returns the scan, the log's first run_started, and whether the whole log was read.
    """
    size = os.fstat(fd).st_size
    if size <= SMALL_LOG:
        scan = _scan(os.pread(fd, size, 0).split(b"\n"))
        return scan, scan.starts[0] if scan.starts else None, True
    lines = os.pread(fd, TAIL_BYTES, size - TAIL_BYTES).split(b"\n")[1:]  # [0] may begin mid-line
    return _scan(lines), _first_start(fd), False


def _best(epochs: Iterable[tuple[int, int, float | None]]) -> float | None:
    values = [acc for _seq, _epoch, acc in epochs if acc is not None]
    return max(values) if values else None


def _counted(scan: _Scan, whole: bool) -> list[tuple[int, int, float | None]]:
    """The epochs that count: in a whole log, those a resume superseded are left out (each epoch once)."""
    spans = supersessions(scan.starts) if whole else ()
    if not spans:
        return scan.epochs
    return [e for e in scan.epochs if not any(span.covers(e[0], e[1]) for span in spans)]


def describe_run(run_dir: str | os.PathLike[str]) -> RunInfo:
    """One run directory as `esper-tui runs` shows it. Never raises for a damaged or odd directory."""
    path = Path(run_dir)
    live = lock_held(path)
    mtime = _mtime(path)
    try:
        fd = os.open(path / LOG_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # no log yet (an engine starting), or none we may read
        return RunInfo(path, _status(live, None), sort_time=mtime)
    try:
        scan, first, whole = _read_log(fd)
    except OSError:
        return RunInfo(path, "live" if live else "unknown", sort_time=mtime)
    finally:
        os.close(fd)
    epochs = _counted(scan, whole)
    newest = scan.starts[-1] if scan.starts else first  # a resume may have moved the planned end
    started = first.time if first is not None and math.isfinite(first.time) else None
    return RunInfo(
        path,
        _status(live, scan.last),
        task=safe_text(newest.task) if newest is not None else None,
        epoch=_epoch_reached(epochs, scan.last),
        planned=newest.planned_epochs if newest is not None else None,
        best_accuracy=_best(epochs),
        best_exact=whole,
        started=started,
        sort_time=started if started is not None else mtime,
    )


def _epoch_reached(epochs: Sequence[tuple[int, int, float | None]], last: Event | None) -> int | None:
    if epochs:
        return max(epoch for _seq, epoch, _acc in epochs)
    if last is not None and last.kind == "run_finished":
        done = last.final.get("epochs")
        return int(done) if done is not None and math.isfinite(done) else None
    return 0 if last is not None else None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _is_run_dir(path: Path) -> bool:
    """A directory with a run log or an engine's lock file (an engine that has not logged yet)."""
    try:
        return path.is_dir() and not path.is_symlink() and (
            (path / LOG_NAME).exists() or (path / LOCK_NAME).exists())
    except OSError:
        return False


def find_runs(base: str | os.PathLike[str] = RUNS_DIR) -> list[RunInfo]:
    """The runs directly under `base`, newest first (by their start, else the directory's mtime).

    Raises FileNotFoundError / NotADirectoryError when `base` is not a directory.
    """
    root = Path(base)
    entries = sorted(root.iterdir())  # raises for a missing or non-directory base
    runs = [describe_run(p) for p in entries if _is_run_dir(p)]
    return sorted(runs, key=lambda r: (r.sort_time, r.path.name), reverse=True)


def live_runs(runs: Iterable[RunInfo]) -> list[RunInfo]:
    """The runs an engine is running now."""
    return [r for r in runs if r.status == "live"]


# ------------------------------------------------------------------------------------------ the table
COLUMNS = ("RUN", "TASK", "STATUS", "EPOCH", "BEST VAL", "STARTED")
APPROX_MARK = "*"
APPROX_NOTE = f"{APPROX_MARK} a log over {SMALL_LOG >> 20} MB: the best of its last epochs only (the rest is not read)"


def _cells(run: RunInfo) -> tuple[str, ...]:
    epoch = DASH if run.epoch is None else str(run.epoch)
    planned = DASH if run.planned is None else str(run.planned)
    best = DASH if run.best_accuracy is None else f"{run.best_accuracy:.1f}%"
    if run.best_accuracy is not None and not run.best_exact:
        best += APPROX_MARK
    return (run.name, run.task or DASH, run.status, f"{epoch}/{planned}", best, format_started(run.started))


def format_started(when: float | None) -> str:
    """A start time in local time, to the minute ("2026-12-04 01:30"); "-" when unknown."""
    if when is None:
        return DASH
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(when))
    except (OverflowError, OSError, ValueError):
        return DASH


def table_rows(runs: Sequence[RunInfo], gap: int = 2) -> list[str]:
    """The header line, then one line per run, in aligned columns `gap` spaces apart."""
    rows = [COLUMNS, *(_cells(r) for r in runs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return [(" " * gap).join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def format_runs(runs: Sequence[RunInfo], base: str | os.PathLike[str] = RUNS_DIR) -> str:
    """The `esper-tui runs` text: the table, its footnote when needed, and how to watch one."""
    where = safe_text(str(base))
    if not runs:
        return f"no runs under {where}/ (start one with: esper-tui)\n"
    lines = table_rows(runs)
    if any(r.best_accuracy is not None and not r.best_exact for r in runs):
        lines += ["", APPROX_NOTE]
    live = len(live_runs(runs))
    # The bare `attach` looks in ./runs only: offer it only for the runs listed from there.
    choose = " (or just esper-tui attach)" if Path(base) == RUNS_DIR else ""
    lines += ["", f"{len(runs)} run{'s' if len(runs) != 1 else ''}, {live} live. "
                  f"Watch: esper-tui attach {where}/NAME{choose}"]
    return "\n".join(lines) + "\n"


__all__ = [
    "APPROX_NOTE", "COLUMNS", "RUNS_DIR", "SMALL_LOG", "STATUSES", "TAIL_BYTES", "RunInfo", "Status",
    "describe_run", "find_runs", "format_runs", "format_started", "live_runs", "lock_held", "table_rows",
]
