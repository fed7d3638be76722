"""The engine as its own process: start `python -m engine train` in its own session, watch it, read its stderr.

Owns the child process and its output files (RUN_DIR/engine.out, engine.err; owner-only). Knows the
engine only by its command line; never imports torch or the trainer, never reads the run log (it
only looks whether the log has grown, to tell a started run from one the engine refused).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from engine.rundir import LOCK_NAME
from engine.telemetry.runlog import LOG_NAME

OUT_NAME = "engine.out"
ERR_NAME = "engine.err"


def engine_launcher(python: str | None = None, nproc: int = 1) -> list[str]:
    """How the engine is started: `python -m engine`, or with `nproc` > 1 torchrun starting that many
    engine processes on this node (`--standalone`: its own rendezvous on a free local port, so two
    runs on one machine never meet). Rank 0 writes the log and serves the socket, as one process would."""
    python = python or sys.executable
    if nproc <= 1:
        return [python, "-m", "engine"]
    return [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m", "engine"]


def engine_command(run_dir: str | os.PathLike[str], train_args: Sequence[str], python: str | None = None,
                   nproc: int = 1) -> list[str]:
    """The engine process's argv for a dashboard-supervised run (progress lines off: the UI shows them)."""
    return [*engine_launcher(python, nproc), "train", "--run-dir", str(run_dir), "--quiet", *train_args]


def _private_dir(path: Path) -> None:
    """Create `path` owner-only; a directory that already exists (a resumed run) keeps its mode."""
    if path.is_dir():
        return
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # mkdir's mode is narrowed by the umask, never widened; make it exact


def _private_append(path: Path) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode under O_CREAT
    return fd


class EngineProcess:
    """One engine run in a child process of its own session.

    `start_new_session=True`: a terminal hang-up or the dashboard quitting never reaches the engine,
    so detaching leaves it training. Its stdout/stderr go to files in the run directory (appended, so
    a resumed run keeps the earlier output; `stderr_tail` reads only this launch's part).
    """

    def __init__(self, popen: subprocess.Popen[bytes], run_dir: Path, argv: list[str], err_offset: int = 0,
                 *, created_dir: bool = False, created_files: tuple[str, ...] = (),
                 log_at_launch: tuple[int, int] | None = None) -> None:
        self._popen = popen
        self.run_dir = run_dir
        self.argv = argv
        self.out_path = run_dir / OUT_NAME
        self.err_path = run_dir / ERR_NAME
        self._err_offset = err_offset
        self.created_dir = created_dir  # start() made the run directory (only then may discard remove it)
        self.created_files = created_files  # the output files start() made (not appended to)
        self._log_at_launch = log_at_launch  # (inode, size) of the run log just before the launch

    @classmethod
    def start(
        cls,
        run_dir: str | os.PathLike[str],
        train_args: Sequence[str] = (),
        *,
        python: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        new_dir: bool = False,
        nproc: int = 1,
    ) -> EngineProcess:
        """Launch `python -m engine train --run-dir RUN_DIR --quiet *train_args` and return at once
        (with `nproc` > 1: under torchrun, that many processes; see `engine_launcher`).

        The run directory is created 0o700 first (before the engine does) so its output files can
        live there; they are 0o600. `new_dir`: the caller created `run_dir` for this launch
        (`new_run_dir`), so it is as much this launch's as one created here (see `discard_unstarted`).
        Raises OSError if the interpreter cannot be started.
        """
        run = Path(run_dir)
        created_dir = new_dir or not run.is_dir()
        _private_dir(run)
        argv = engine_command(run, train_args, python, nproc)
        created = tuple(name for name in (OUT_NAME, ERR_NAME) if not os.path.lexists(run / name))
        log_at_launch = _file_id(run / LOG_NAME)  # before the child exists: nothing of its own in it yet
        out_fd = _private_append(run / OUT_NAME)
        err_fd = _private_append(run / ERR_NAME)
        try:
            err_offset = os.fstat(err_fd).st_size
            child_env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_fd,
                stderr=err_fd,
                start_new_session=True,
                close_fds=True,
                env=child_env,
                cwd=cwd,
            )
        finally:
            os.close(out_fd)  # the child holds its own copies
            os.close(err_fd)
        return cls(popen, run, argv, err_offset, created_dir=created_dir, created_files=created,
                   log_at_launch=log_at_launch)

    @property
    def pid(self) -> int:
        """The engine's process id (also its process-group and session id)."""
        return self._popen.pid

    def poll(self) -> int | None:
        """The exit code once the engine has exited (negative: killed by that signal), else None."""
        return self._popen.poll()

    @property
    def returncode(self) -> int | None:
        """Same as `poll()`."""
        return self._popen.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to `timeout` seconds (in short steps) for the exit; the exit code, or None if still running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self._popen.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
        return code

    def stderr_tail(self, n_chars: int = 4000) -> str:
        """The last `n_chars` characters this launch wrote to stderr (a traceback, a usage error)."""
        try:
            with open(self.err_path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                # UTF-8 is at most 4 bytes a character: read enough bytes, then cut by characters.
                start = max(self._err_offset, size - 4 * n_chars)
                f.seek(start)
                data = f.read(size - start)
        except OSError:
            return ""
        return data.decode("utf-8", errors="replace")[-n_chars:]

    def has_logged(self) -> bool:
        """Whether the run log has changed since the launch: this engine wrote its first event.

        Only the file's identity and size are looked at (a replaced log, `--overwrite`, is a new file).
        """
        now = _file_id(self.run_dir / LOG_NAME)
        if now is None or now[1] == 0:  # the engine opens its log before it has anything to say
            return False
        before = self._log_at_launch
        return before is None or now[0] != before[0] or now[1] > before[1]

    def wait_until_logging(self, timeout: float, interval: float = 0.05) -> int | None:
        """Wait until the engine writes its first event or exits, for at most `timeout` seconds.

        Returns its exit code when it exited without writing an event (it refused to start: bad
        options, a locked or occupied directory, missing data: the reason is on stderr), else None
        (it is logging, or still starting after `timeout`).
        """
        deadline = time.monotonic() + timeout
        while True:
            code = self._popen.poll()  # before looking at the log: an event written before the exit is seen
            if self.has_logged():
                return None
            if code is not None:
                return code
            if time.monotonic() >= deadline:
                return None
            time.sleep(interval)

    def discard_unstarted(self) -> bool:
        """After a refused start: remove what this launch left behind; True if the directory went too.

        The run directory is removed only when `start` created it and it holds nothing but this
        launch's output files (and the engine's lock file or an empty log, which it leaves when it
        dies before cleaning up). A directory that existed before is never removed; from it only
        the output files `start` created go. Links and anything else are left alone.
        """
        if self._popen.poll() is None:
            raise RuntimeError("the engine is still running")
        if self.created_dir and _only_leftovers(self.run_dir):
            for name in _LEFTOVERS:
                (self.run_dir / name).unlink(missing_ok=True)
            try:
                self.run_dir.rmdir()
                return True
            except OSError:
                return False  # something arrived meanwhile: keep it
        for name in self.created_files:
            path = self.run_dir / name
            if path.is_file() and not path.is_symlink():
                path.unlink()
        return False

    def _signal_group(self, sig: int) -> None:
        if self._popen.poll() is not None:
            return  # reaped: the id may already belong to someone else
        try:
            os.killpg(self._popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def terminate(self) -> None:
        """SIGTERM to the engine's process group. Last resort: the graceful way is the `stop` command."""
        self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the engine's process group (the log then ends without a final event)."""
        self._signal_group(signal.SIGKILL)

    def __repr__(self) -> str:
        return f"EngineProcess(pid={self.pid}, run_dir={str(self.run_dir)!r}, returncode={self.poll()})"


def _file_id(path: Path) -> tuple[int, int] | None:
    """(inode, size) of a file, or None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size


_LEFTOVERS = frozenset({OUT_NAME, ERR_NAME, LOCK_NAME, LOG_NAME})


def _only_leftovers(run_dir: Path) -> bool:
    """Whether `run_dir` holds only what a refused start leaves: output files, a lock, an empty log."""
    try:
        names = os.listdir(run_dir)
    except OSError:
        return False
    for name in names:
        path = run_dir / name
        if name not in _LEFTOVERS or path.is_symlink() or not path.is_file():
            return False
        if name == LOG_NAME and path.stat().st_size > 0:
            return False
    return True


def new_run_dir(base: str | os.PathLike[str] = "runs", task: str = "digits", now: float | None = None) -> Path:
    """Create and return a fresh run directory `BASE/YYYYmmdd-HHMMSS-TASK` (owner-only).

    Creating it is what makes the name unique, even against another dashboard starting in the same
    second: if the name is taken, `-2`, `-3` … is appended.
    """
    root = Path(base)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    name = f"{stamp}-{task}"
    for n in range(1, 10_000):
        path = root / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(path, 0o700)
        return path
    raise FileExistsError(f"no free run directory name for {root / name}")


__all__ = ["ERR_NAME", "OUT_NAME", "EngineProcess", "engine_command", "engine_launcher", "new_run_dir"]
