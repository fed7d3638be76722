"""The run directory under misuse: a second engine, a reused directory, someone else's directory,
planted links, a file or an unwritable place, a hostile checkpoint (SPEC §8). Each is refused with
one clear line and exit code 2, and what was in the directory is left exactly as it was."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine import launch
from engine.rundir import LOCK_NAME, RunDir, StartError
from engine.telemetry import read_events

ENGINE = [sys.executable, "-m", "engine", "train", "--preset", "quick", "--quiet"]


def engine(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENGINE, *args], capture_output=True, text=True, timeout=timeout)


def one_clear_line(result: subprocess.CompletedProcess[str]) -> str:
    """The engine refused: exit 2, a single `error:` line, never a traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file() and p.name != LOCK_NAME}


def copy_of(run: Path, where: Path) -> Path:
    """A copy of a run directory's files (the module's finished run is shared: tests change copies)."""
    where.mkdir()
    for name, data in snapshot(run).items():
        (where / name).write_bytes(data)
    return where


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = engine("--run-dir", str(run_dir), "--epochs", "3")
    assert result.returncode == 0, result.stderr
    return run_dir


# ====================================================================== the lock
def test_a_second_claim_is_refused_naming_the_first_engine(tmp_path):
    first = RunDir.claim(tmp_path / "run")
    with pytest.raises(StartError, match=rf"another engine \(pid {os.getpid()}\) is running in .*run.*attach"):
        RunDir.claim(tmp_path / "run")
    first.release()
    RunDir.claim(tmp_path / "run").release()  # released: the directory is free again


def test_a_second_engine_on_a_live_run_exits_2_and_leaves_its_log_whole(tmp_path):
    run_dir = tmp_path / "live"
    # Paced so that it is certainly still running when the second engine arrives.
    first = subprocess.Popen([*ENGINE, "--run-dir", str(run_dir), "--epochs", "200", "--set", "min_epoch_seconds=0.2"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        log = run_dir / "events.jsonl"
        deadline = time.monotonic() + 60
        while b'"epoch_completed"' not in (log.read_bytes() if log.exists() else b""):
            assert time.monotonic() < deadline and first.poll() is None, "the first engine never trained"
            time.sleep(0.05)
        before = log.read_bytes()
        line = one_clear_line(engine("--run-dir", str(run_dir), "--overwrite"))
        assert f"pid {first.pid}" in line and "esper-tui attach" in line
        after = log.read_bytes()
        assert after.startswith(before), "the second engine changed what the first had written"
        assert b"\x00" not in after
        assert first.poll() is None, "the first engine was disturbed"
    finally:
        first.terminate()
        first.wait(timeout=60)
    events = read_events(run_dir, strict=True).events
    assert [e.kind for e in events].count("run_started") == 1
    assert events[-1].kind == "run_finished"


# ====================================================================== reusing a directory
def test_a_finished_run_is_never_overwritten_without_asking(finished_run):
    before = snapshot(finished_run)
    line = one_clear_line(engine("--run-dir", str(finished_run)))
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    assert snapshot(finished_run) == before


def test_overwrite_replaces_the_run_and_resume_continues_it(tmp_path, finished_run):
    run_dir = copy_of(finished_run, tmp_path / "copy")
    assert engine("--resume", str(run_dir), "--epochs", "4").returncode == 0
    starts = [e for e in read_events(run_dir).events if e.kind == "run_started"]
    assert [s.resumed for s in starts] == [False, True] and starts[1].resumed_from_epoch == 3
    assert engine("--run-dir", str(run_dir), "--overwrite", "--epochs", "2").returncode == 0
    events = read_events(run_dir).events
    assert [e.kind for e in events].count("run_started") == 1
    assert [e.epoch for e in events if e.kind == "epoch_completed"] == [1, 2]


def test_resume_with_fewer_epochs_than_done_is_refused(finished_run):
    before = snapshot(finished_run)
    line = one_clear_line(engine("--resume", str(finished_run), "--epochs", "2"))
    assert "already trained 3 epochs" in line and "--epochs 3 or more" in line
    assert snapshot(finished_run) == before


def test_resume_without_epochs_keeps_the_runs_own_plan(tmp_path, finished_run):
    run_dir = copy_of(finished_run, tmp_path / "again")
    # The preset's 24 epochs must not extend a 3-epoch run that is already complete.
    assert engine("--resume", str(run_dir)).returncode == 0
    assert [e.epoch for e in read_events(run_dir).events if e.kind == "epoch_completed"] == [1, 2, 3]


# ====================================================================== not the user's, not a directory
def test_a_directory_of_another_user_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "getuid", lambda: os.stat(tmp_path).st_uid + 1)
    with pytest.raises(StartError, match="belongs to another user"):
        RunDir.claim(tmp_path)
    assert not (tmp_path / LOCK_NAME).exists()


def test_an_existing_directory_keeps_its_mode(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: sticky and world-writable
    RunDir.claim(shared).release()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    created = RunDir.claim(tmp_path / "new")
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    created.release()


def test_a_run_directory_that_is_a_file_is_one_clear_line(tmp_path):
    target = tmp_path / "file"
    target.write_text("not a directory")
    line = one_clear_line(engine("--run-dir", str(target)))
    assert "is a file" in line
    assert target.read_text() == "not a directory"


def test_an_unwritable_directory_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(StartError, match="not writable"):
        RunDir.claim(tmp_path)


@pytest.mark.parametrize("name", ["events.jsonl", "checkpoint.pt", LOCK_NAME])
def test_a_planted_link_is_not_followed(tmp_path, name):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    victim.chmod(0o644)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / name).symlink_to(victim)
    line = one_clear_line(engine("--run-dir", str(run_dir), "--overwrite"))
    assert "symbolic link" in line
    assert victim.read_text() == "precious" and stat.S_IMODE(victim.stat().st_mode) == 0o644


def test_the_log_writer_itself_refuses_a_link(tmp_path):
    from engine.telemetry.logwriter import LogWriteError, RunLogWriter

    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "events.jsonl").symlink_to(victim)
    with pytest.raises(LogWriteError, match="symbolic link"):
        RunLogWriter(tmp_path / "events.jsonl")
    assert victim.read_text() == "precious"


# ====================================================================== hostile checkpoints
class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("make", [
    pytest.param(lambda p: torch.save({"format": 1, "x": Payload()}, p), id="code"),
    pytest.param(lambda p: torch.save({"format": 1, "epoch": 3}, p), id="incomplete"),
    pytest.param(lambda p: p.write_bytes(b"PK\x03\x04 not really"), id="garbage"),
    pytest.param(lambda p: torch.save([1, 2], p), id="not-a-dict"),
])
def test_a_bad_checkpoint_on_resume_is_one_line_and_logs_nothing(tmp_path, finished_run, make):
    run_dir = copy_of(finished_run, tmp_path / "run")
    make(run_dir / "checkpoint.pt")
    before = snapshot(run_dir)
    line = one_clear_line(engine("--resume", str(run_dir)))
    assert str(run_dir / "checkpoint.pt") in line and "start a new run" in line
    assert snapshot(run_dir) == before


def test_a_checkpoint_of_another_host_is_refused_before_logging(tmp_path, finished_run):
    run_dir = copy_of(finished_run, tmp_path / "run")
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    state["model"] = {k: v[..., :1] if v.dim() else v for k, v in state["model"].items()}  # wrong shapes
    torch.save(state, run_dir / "checkpoint.pt")
    log_before = (run_dir / "events.jsonl").read_bytes()
    line = one_clear_line(engine("--resume", str(run_dir)))
    assert "does not fit" in line
    assert (run_dir / "events.jsonl").read_bytes() == log_before


def test_launch_refuses_resume_with_overwrite(capsys):
    assert launch.main(["train", "--resume", "x", "--overwrite"]) == 2
    assert "choose one" in capsys.readouterr().err


def test_missing_data_is_one_line_and_leaves_nothing_behind(tmp_path):
    run_dir = tmp_path / "runs" / "cifar"
    line = one_clear_line(engine("--run-dir", str(run_dir), "--task", "cifar10", "--data-dir", str(tmp_path / "nowhere")))
    assert "cifar" in line.lower() and str(tmp_path / "nowhere") in line
    assert not run_dir.exists(), "a run that never started must not leave its directory behind"
    assert not run_dir.parent.exists(), "nor the runs/ directory made for it"


def test_a_refused_start_in_an_existing_directory_keeps_it_and_its_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    one_clear_line(engine("--run-dir", str(tmp_path), "--task", "cifar10", "--data-dir", str(tmp_path / "nowhere")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
