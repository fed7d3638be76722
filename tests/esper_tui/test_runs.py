"""`esper-tui runs`: the runs under a directory, newest first, as a user reads them (issue 9, item 6).

Run logs are written with the engine's own writer; "live" is a lock the test itself holds on
RUN_DIR/engine.lock, exactly as an engine does (never a pid).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest

from engine.telemetry import Emitter, EpochCompleted, RunFailed, RunFinished, RunLogWriter, RunStarted, StepMetrics
from esper_tui import cli, runs
from esper_tui.runs import describe_run, find_runs, format_runs, lock_held

pytestmark = pytest.mark.timeout(60)
T0 = time.mktime((2026, 12, 4, 1, 30, 0, 0, 0, -1))  # local time, as the table shows it


class Run:
    """One run directory written the way the engine writes it."""

    def __init__(self, base: Path, name: str, *, task: str = "digits", planned: int = 10, started: float = T0):
        self.path = base / name
        self.path.mkdir(parents=True)
        self.writer = RunLogWriter(self.path / "events.jsonl")
        self.emitter = Emitter(self.writer, clock=lambda: started)
        self.emitter.emit(RunStarted, run_id="r1", config={}, task=task, topology="cnn", slots=("s1",),
                          isolation={}, device="cpu", planned_epochs=planned)

    def epochs(self, accuracies: list[float], first: int = 1, steps: int = 1) -> Run:
        for n, acc in enumerate(accuracies, first):
            self.emitter.epoch = n
            for _ in range(steps):
                self.emitter.emit(StepMetrics, loss=1.0, lr=0.1)
            self.emitter.emit(EpochCompleted, val_accuracy=acc)
        return self

    def finish(self, status: str = "completed") -> Run:
        self.emitter.emit(RunFinished, status=status, final={"epochs": float(self.emitter.epoch)})
        return self.close()

    def fail(self) -> Run:
        self.emitter.emit(RunFailed, error_type="RuntimeError", message="boom", traceback="")
        return self.close()

    def close(self) -> Run:
        self.writer.close()
        return self


class EngineLock:
    """Holds RUN_DIR/engine.lock exclusively, as a running engine does (the file holds "PID TIME")."""

    def __init__(self, run_dir: Path) -> None:
        self.fd = os.open(run_dir / "engine.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(self.fd, f"{os.getpid()} 2026-12-04T01:30:00\n".encode())

    def release(self) -> None:
        os.close(self.fd)


def started(minute: int) -> float:
    return T0 + 60 * minute


def runs_output(capsys, *args: str) -> tuple[int, list[str]]:
    code = cli.main(["runs", *args])
    return code, capsys.readouterr().out.splitlines()


def test_runs_lists_each_run_newest_first_with_task_status_epochs_best_and_start(run_dir, capsys):
    base = run_dir / "runs"
    Run(base, "20261204-013000-digits", started=started(0)).epochs([50.0, 80.0, 70.0]).finish()
    Run(base, "20261204-013100-mnist5k", task="mnist5k", planned=100, started=started(1)).epochs([60.0, 65.5]).finish("stopped")
    Run(base, "20261204-013200-text", task="text", planned=40, started=started(2)).epochs([10.0]).fail()
    Run(base, "20261204-013300-digits", started=started(3)).epochs([40.0, 41.0]).close()  # killed: no final event
    live = Run(base, "20261204-013400-cifar10", task="cifar10", planned=30, started=started(4))
    live.epochs([33.3])
    live.writer.flush()
    lock = EngineLock(live.path)
    (base / "not-a-run").mkdir()  # no log, no lock: not listed
    (base / "notes.txt").write_text("x")
    try:
        code, lines = runs_output(capsys, str(base))
    finally:
        lock.release()
        live.close()
    assert code == 0
    assert lines[0].split() == ["RUN", "TASK", "STATUS", "EPOCH", "BEST", "VAL", "STARTED"]
    rows = [line.split() for line in lines[1:6]]
    assert rows == [
        ["20261204-013400-cifar10", "cifar10", "live", "1/30", "33.3%", "2026-12-04", "01:34"],
        ["20261204-013300-digits", "digits", "crashed", "2/10", "41.0%", "2026-12-04", "01:33"],
        ["20261204-013200-text", "text", "crashed", "1/40", "10.0%", "2026-12-04", "01:32"],
        ["20261204-013100-mnist5k", "mnist5k", "stopped", "2/100", "65.5%", "2026-12-04", "01:31"],
        ["20261204-013000-digits", "digits", "finished", "3/10", "80.0%", "2026-12-04", "01:30"],
    ]
    assert "not-a-run" not in "\n".join(lines)
    assert lines[-1].startswith("5 runs, 1 live. Watch: esper-tui attach ")
    assert all(len(line) <= 80 for line in lines)


def test_live_means_an_engine_holds_the_lock_never_a_pid(run_dir):
    run = Run(run_dir, "r").epochs([50.0]).close()
    # The lock file names a running process (this one), but nobody holds the lock: the engine is gone.
    (run.path / "engine.lock").write_text(f"{os.getpid()} 2026-12-04T01:30:00\n")
    assert lock_held(run.path) is False
    assert describe_run(run.path).status == "crashed"
    lock = EngineLock(run.path)
    try:
        assert lock_held(run.path) is True
        assert describe_run(run.path).status == "live"
        # Looking did not take the engine's lock away: it still holds it, and nobody else gets it.
        other = os.open(run.path / "engine.lock", os.O_RDONLY)
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(other)
    finally:
        lock.release()
    assert describe_run(run.path).status == "crashed"


def test_an_engine_still_loading_is_live_before_its_log_exists(run_dir):
    (run_dir / "starting").mkdir()
    lock = EngineLock(run_dir / "starting")
    try:
        (info,) = find_runs(run_dir)
        assert info.status == "live" and info.task is None
        assert format_runs([info], run_dir).splitlines()[1].split()[:4] == ["starting", "-", "live", "-/-"]
    finally:
        lock.release()


def test_an_empty_or_unreadable_log_is_unknown(run_dir):
    (run_dir / "empty").mkdir()
    (run_dir / "empty" / "events.jsonl").write_bytes(b"")
    (run_dir / "garbage").mkdir()
    (run_dir / "garbage" / "events.jsonl").write_bytes(b"not json\n")
    assert {r.name: r.status for r in find_runs(run_dir)} == {"empty": "unknown", "garbage": "unknown"}


def test_epochs_a_resume_superseded_do_not_count_and_the_resume_moves_the_plan(run_dir):
    run = Run(run_dir, "r", planned=6)
    run.epochs([50.0, 60.0, 70.0])
    after = run.emitter.seq
    run.epochs([99.0], first=4)  # the killed attempt's epoch 4: written again after the resume
    run.emitter.epoch = 3
    run.emitter.emit(RunStarted, run_id="r2", config={}, task="digits", topology="cnn", slots=("s1",), isolation={},
                     device="cpu", planned_epochs=8, resumed=True, resumed_from_epoch=3, resumed_after_seq=after)
    run.epochs([72.0, 75.0], first=4)
    run.finish()
    info = describe_run(run.path)
    assert (info.status, info.epoch, info.planned, info.best_accuracy, info.best_exact) == ("finished", 5, 8, 75.0, True)


def test_a_big_log_is_never_read_whole(run_dir, monkeypatch):
    """Only its first line and its tail are read; the best accuracy is the tail's, and the table says so."""
    monkeypatch.setattr(runs, "SMALL_LOG", 64 << 10)
    monkeypatch.setattr(runs, "TAIL_BYTES", 16 << 10)
    run = Run(run_dir, "big", planned=2000)
    run.epochs([99.0], steps=1)  # the best, early: outside the tail
    run.epochs([50.0 + (n % 7) for n in range(2, 400)], first=2, steps=3)
    run.close()
    size = (run.path / "events.jsonl").stat().st_size
    assert size > 3 * runs.SMALL_LOG
    read = []
    real_pread = os.pread

    def counting_pread(fd, n, offset):
        data = real_pread(fd, n, offset)
        read.append(len(data))
        return data

    monkeypatch.setattr(runs.os, "pread", counting_pread)
    info = describe_run(run.path)
    assert sum(read) < size / 2
    assert (info.status, info.task, info.epoch, info.planned) == ("crashed", "digits", 399, 2000)
    assert info.best_accuracy == 56.0 and info.best_exact is False
    text = format_runs([info], run_dir)
    assert "56.0%*" in text.splitlines()[1]
    assert "* a log over" in text and "the best of its last epochs only" in text


def test_what_a_log_says_is_shown_as_text(run_dir, capsys):
    Run(run_dir, "evil\x1b]0;pwned\x07", task="digits\x1b[2J").epochs([50.0]).finish()
    code, lines = runs_output(capsys, str(run_dir))
    text = "\n".join(lines)
    assert code == 0 and "\x1b" not in text and "\x07" not in text
    assert "evil\\x1b]0;pwned\\x07" in text and "digits\\x1b[2J" in text


def test_no_runs_yet_is_said_plainly_and_a_wrong_directory_is_an_error(run_dir, capsys, monkeypatch):
    monkeypatch.chdir(run_dir)
    code, lines = runs_output(capsys)  # no ./runs at all
    assert code == 0 and lines == ["no runs under runs/ (start one with: esper-tui)"]
    code = cli.main(["runs", str(run_dir / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and "nowhere" in err and len(err.splitlines()) == 1
