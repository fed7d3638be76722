"""Writing the run log: RUN_DIR/events.jsonl, owner-only, appended after a crash without gluing lines.

Owns the log file's permissions and how it is opened, repaired and flushed. Knows the event models
and the line format (`runlog.parse_line`), nothing about training or the dashboard.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from pydantic import ValidationError

from engine.telemetry.events import EventBase
from engine.telemetry.runlog import MAX_LINE, parse_line

_TAIL_CHUNK = 64 * 1024


def _open_private(path: Path, append: bool) -> int:
    """Open the log for writing, owner-only (SPEC §8), creating its directory if needed."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(parent, 0o700)  # umask may have narrowed it oddly; never touch a pre-existing dir
    # O_NOFOLLOW: a link planted at events.jsonl must not redirect our writes to another file.
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LogWriteError(exc.errno, f"{path} is a symbolic link: the engine never writes through "
                                           "links; remove it") from None
        raise
    if hasattr(os, "fchmod"):
        os.fchmod(fd, 0o600)  # an existing file keeps its old mode under O_CREAT
    return fd


def _repair_tail(path: Path) -> None:
    """Before appending: end the file at a line boundary so new events never glue onto old bytes.

    A partial last line that does not parse is a crash artifact that can never be completed, so it
    is cut off; a complete event that only lacks its newline gets one. Linear in that line's length:
    it is read once, backwards in fixed chunks, and parsed from the chunks read; a line over
    `MAX_LINE` cannot be an event and is cut unparsed.
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
        pieces: list[bytes] = []  # the partial line, from its end backwards, while it may be an event
        end = size
        while True:
            start = max(0, end - _TAIL_CHUNK)
            f.seek(start)
            chunk = f.read(end - start)
            cut = chunk.rfind(b"\n")  # -1 when the line goes on before this chunk
            line_start = start + cut + 1
            if size - line_start <= MAX_LINE:
                pieces.append(chunk[cut + 1:])
            if cut >= 0 or start == 0:
                break
            end = start
        if size - line_start > MAX_LINE:
            f.truncate(line_start)
            return
        try:
            parse_line(b"".join(reversed(pieces)))
        except ValidationError:
            f.truncate(line_start)
        else:
            f.seek(size)
            f.write(b"\n")


class LogWriteError(OSError):
    """The run log could not be written (disk full, I/O error). The file still ends at a line boundary."""

    def __str__(self) -> str:
        return str(self.strerror)  # the whole sentence, without OSError's "[Errno 28]" prefix


class RunLogWriter:
    """Writes events to a JSON Lines run log. An EventSink.

    Buffered: `flush()` hands lines to the OS, `flush(fsync=True)` also forces them to disk, and
    `close()` does both. `append=True` continues an existing log (a resumed run). The file is 0o600
    and never opened through a symbolic link.

    A failed write (ENOSPC, EIO, …) raises LogWriteError after cutting the file back to its last
    complete line, so a reader never meets a torn line; the unwritten lines are dropped. After that
    every event is written through on its own, so a final event still lands if room is found.
    """

    def __init__(self, path: str | os.PathLike[str], append: bool = False, buffer_size: int = 1 << 16) -> None:
        self.path = Path(path)
        if append:
            _repair_tail(self.path)
        self._fd: int | None = _open_private(self.path, append)
        self._buffer = bytearray()
        self._buffer_size = buffer_size
        self._good = os.fstat(self._fd).st_size  # the file ends with a whole line here
        self.failed: OSError | None = None

    @property
    def closed(self) -> bool:
        """Whether `close()` has been called."""
        return self._fd is None

    def write(self, event: EventBase) -> None:
        """Append one event as one line (stages by name, stage_changed's "from"/"to" by alias)."""
        if self._fd is None:
            raise ValueError(f"run log {self.path} is closed")
        self._buffer += event.model_dump_json(by_alias=True).encode()
        self._buffer += b"\n"
        if len(self._buffer) >= self._buffer_size or self.failed is not None:
            self.flush()

    def flush(self, fsync: bool = False) -> None:
        """Hand buffered lines to the OS; with `fsync`, wait until they are on disk."""
        if self._fd is None:
            return
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            try:
                view = memoryview(data)
                while view:  # os.write may write less than asked (e.g. the disk just filled up)
                    view = view[os.write(self._fd, view):]
            except OSError as exc:
                self._fail(exc)
            self._good += len(data)
        if fsync:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        try:
            os.ftruncate(self._fd, self._good)  # needs no space: drop the torn tail
            os.lseek(self._fd, self._good, os.SEEK_SET)  # or the next write leaves a hole of NULs
        except OSError:
            pass
        self.failed = exc
        reason = exc.strerror or str(exc)
        code = errno.errorcode.get(exc.errno or 0, "")
        raise LogWriteError(exc.errno, f"cannot write the run log {self.path}: {reason}"
                                       + (f" ({code})" if code else "")) from None

    def close(self) -> None:
        """Flush, fsync and close. Idempotent. The file is closed even if the last flush fails."""
        if self._fd is None:
            return
        try:
            self.flush(fsync=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
