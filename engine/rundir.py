"""The run directory: claimed by one engine at a time, owned by the user, never someone else's files.

`RunDir.claim` is the first thing an engine does with its directory, before it reads or writes
anything there: it checks the directory is the user's own and writable, takes an exclusive lock
(`fcntl.flock` on RUN_DIR/engine.lock, released by the kernel when the process ends, however it
ends), and refuses to start a new run over an existing one unless told to continue (`--resume`) or
to replace it (`--overwrite`). Pure file-system logic: no torch, no events.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path
from typing import Literal

from engine.telemetry.runlog import LOG_NAME

LOCK_NAME = "engine.lock"
CHECKPOINT_NAME = "checkpoint.pt"
FORK_DIR = "checkpoints"  # a run's kept epoch checkpoints (engine.fork)
Mode = Literal["new", "resume", "overwrite"]


class StartError(Exception):
    """The run cannot start as asked. The message says what, where and what to do (exit code 2)."""


def _describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "it is on a read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    return exc.strerror or str(exc)


class RunDir:
    """A run directory this process holds the lock of. Create with `claim`; `release` when done."""

    def __init__(self, path: Path, lock_fd: int, created: tuple[Path, ...] = ()) -> None:
        self.path = path
        # The directories claim made, the run directory first, then any parents it needed: only
        # these may abandon remove.
        self.created = created
        self._lock_fd: int | None = lock_fd

    @classmethod
    def claim(cls, path: str | os.PathLike[str], mode: Mode = "new") -> RunDir:
        """Make `path` this engine's run directory, or raise StartError saying why it cannot be.

        `new` refuses a directory that already holds a run (a log or a checkpoint); `resume` needs
        its checkpoint; `overwrite` deletes the old log and checkpoint, after taking the lock.
        Only a directory created here is given mode 0o700; an existing one keeps its mode.
        """
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise StartError(f"run directory {p} is a file, not a directory: choose another --run-dir")
        created: tuple[Path, ...] = ()
        if not p.exists():
            if mode == "resume":
                raise StartError(f"cannot resume: {p} does not exist (give the run directory of an earlier run)")
            try:
                missing = tuple(d for d in (p, *p.parents) if not d.exists())
                p.mkdir(mode=0o700, parents=True)
                os.chmod(p, 0o700)  # mkdir's mode is narrowed by the umask; this one we created
                created = missing
            except FileExistsError:
                pass  # created meanwhile by someone else: the checks below judge it
            except OSError as exc:
                raise StartError(f"cannot create run directory {p}: {_describe_os_error(exc)}; "
                                 "choose a writable --run-dir") from None
        st = p.stat()
        if st.st_uid != os.getuid():
            raise StartError(f"run directory {p} belongs to another user (uid {st.st_uid}): the engine writes only "
                             "in directories you own; choose another --run-dir")
        if not os.access(p, os.W_OK | os.X_OK):
            raise StartError(f"run directory {p} is not writable by you: choose another --run-dir")
        run = cls(p, _lock(p), created)
        try:
            run._check_contents(mode)
        except BaseException:
            run.release()
            raise
        return run

    def _check_contents(self, mode: Mode) -> None:
        p = self.path
        log, ckpt = p / LOG_NAME, p / CHECKPOINT_NAME
        for f in (log, ckpt):
            if f.is_symlink():
                raise StartError(f"{f} is a symbolic link: the engine never writes through links; remove it "
                                 "or choose another --run-dir")
        if mode == "resume":
            if not ckpt.is_file():
                raise StartError(f"cannot resume: no {CHECKPOINT_NAME} in {p} (is this a run directory?)")
            return
        holds_run = ckpt.exists() or (log.exists() and log.stat().st_size > 0)
        if holds_run and mode == "new":
            raise StartError(f"{p} already holds a run ({_what_is_there(log, ckpt)}): continue it with "
                             f"--resume {p}, replace it with --overwrite, or choose another --run-dir")
        if mode == "overwrite":
            for f in (log, ckpt, ckpt.with_name(ckpt.name + ".tmp")):
                f.unlink(missing_ok=True)
            kept = p / FORK_DIR  # the replaced run's fork points must not pass for the new run's
            if kept.is_dir() and not kept.is_symlink():
                for f in kept.glob("epoch-*.pt"):
                    f.unlink(missing_ok=True)

    def release(self) -> None:
        """Give the lock back (closing its file). Idempotent; the kernel does it too at exit."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def abandon(self) -> None:
        """The run never started: release, and leave no trace of ours (an empty log, the lock file,
        the directory itself if claim created it and nothing else is in it)."""
        self.release()
        log = self.path / LOG_NAME
        if log.is_file() and not log.is_symlink() and log.stat().st_size == 0:
            log.unlink()
        (self.path / LOCK_NAME).unlink(missing_ok=True)
        for directory in self.created:  # the run directory, then the parents made for it
            try:
                directory.rmdir()
            except OSError:
                break  # someone else's files are in it: keep it and everything above

    def __del__(self) -> None:
        self.release()


def _lock(p: Path) -> int:
    """Take RUN_DIR/engine.lock exclusively and write our pid into it; StartError if held."""
    path = p / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StartError(f"{path} is a symbolic link: remove it (the engine never follows links)") from None
        raise StartError(f"cannot lock run directory {p}: {_describe_os_error(exc)}; "
                         "choose a writable --run-dir") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
        os.close(fd)
        who = f"pid {holder[0]}" if holder and holder[0].isdigit() else "another process"
        raise StartError(f"another engine ({who}) is running in {p}: watch it with `esper-tui attach {p}`, "
                         "or choose another --run-dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode(), 0)
    return fd


def _what_is_there(log: Path, ckpt: Path) -> str:
    parts = []
    if log.exists():
        parts.append(f"a run log of {log.stat().st_size} bytes")
    if ckpt.exists():
        parts.append("a checkpoint")
    return " and ".join(parts)
