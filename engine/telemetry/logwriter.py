"""Writing the run log: RUN_DIR/events.jsonl, owner-only, appended after a crash without gluing lines.

Owns the log file's permissions and how it is opened, repaired and flushed. Knows the event models
and the line format (`runlog.parse_line`), nothing about training or the dashboard.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from engine.telemetry.events import EventBase
from engine.telemetry.runlog import parse_line

_TAIL_CHUNK = 64 * 1024


def _open_private(path: Path, append: bool) -> int:
    """Open the log for writing, owner-only (SPEC §8), creating its directory if needed."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(parent, 0o700)  # umask may have narrowed it oddly; never touch a pre-existing dir
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    if hasattr(os, "fchmod"):
        os.fchmod(fd, 0o600)  # an existing file keeps its old mode under O_CREAT
    return fd


def _repair_tail(path: Path) -> None:
    """Before appending: end the file at a line boundary so new events never glue onto old bytes.

    A partial last line that does not parse is a crash artifact that can never be completed, so it
    is cut off; a complete event that only lacks its newline gets one.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with open(path, "r+b") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        start = max(0, size - _TAIL_CHUNK)
        while True:
            f.seek(start)
            chunk = f.read(size - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0 or start == 0:
                break
            start = max(0, start - 4 * _TAIL_CHUNK)
        line_start = start + cut + 1
        f.seek(line_start)
        try:
            parse_line(f.read(size - line_start))
        except ValidationError:
            f.truncate(line_start)
        else:
            f.seek(size)
            f.write(b"\n")


class RunLogWriter:
    """Writes events to a JSON Lines run log. An EventSink.

    Buffered: `flush()` hands lines to the OS, `flush(fsync=True)` also forces them to disk, and
    `close()` does both. `append=True` continues an existing log (a resumed run). The directory is
    created owner-only (0o700) and the file is 0o600.
    """

    def __init__(self, path: str | os.PathLike[str], append: bool = False, buffer_size: int = 1 << 16) -> None:
        self.path = Path(path)
        if append:
            _repair_tail(self.path)
        fd = _open_private(self.path, append)
        self._file = os.fdopen(fd, "w", encoding="utf-8", newline="\n", buffering=buffer_size)

    @property
    def closed(self) -> bool:
        """Whether `close()` has been called."""
        return self._file.closed

    def write(self, event: EventBase) -> None:
        """Append one event as one line (stages by name, stage_changed's "from"/"to" by alias)."""
        self._file.write(event.model_dump_json(by_alias=True) + "\n")

    def flush(self, fsync: bool = False) -> None:
        """Hand buffered lines to the OS; with `fsync`, wait until they are on disk."""
        if self._file.closed:
            return
        self._file.flush()
        if fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Flush, fsync and close. Idempotent."""
        if self._file.closed:
            return
        try:
            self.flush(fsync=True)
        finally:
            self._file.close()

    def __enter__(self) -> RunLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
