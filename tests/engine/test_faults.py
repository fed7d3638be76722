"""The run log stays true through faults: governor rollbacks after operator commands, crashes and
resumes, SIGTERM, hang-up, a full disk, a kill between checkpoint and log. The check is the
dashboard's own: folding the log through its reducer gives the engine's slot stages, blueprints
and alphas at every epoch, and the story of each slot is an unbroken chain of stage changes."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import checkpoint
from engine.commands import new_command
from engine.config import FaultConfig, quick_config
from engine.lifecycle import Stage
from engine.telemetry import last_seq, read_events
from engine.telemetry import logwriter
from engine.trainer import Trainer
from esper_tui.state import RunState, apply, apply_all

pytestmark = pytest.mark.slow

ENGINE = [sys.executable, "-m", "engine", "train", "--preset", "quick", "--quiet"]


class LogMirror:
    """A sink folding every event through the dashboard's reducer as the engine writes it.

    At each stage change the slot's folded stage must be the change's `from`; at each
    epoch_completed the folded stages and blueprints (from the events before it) and the folded
    alphas (after it) must be the engine's own, read from the live slots at that moment.
    """

    def __init__(self, state: RunState | None = None, run_dir: Path | None = None) -> None:
        self.state = state or RunState()
        self.run_dir = run_dir
        self.trainer: Trainer | None = None
        self.mismatches: list[str] = []
        self.epochs_checked = 0

    def _folded(self, sid: str) -> tuple[str, str | None]:
        view = self.state.slots.get(sid)
        return (view.stage, view.report.blueprint) if view else ("DORMANT", None)

    def write(self, event) -> None:
        if event.kind == "run_started" and event.resumed_after_seq is not None and self.run_dir is not None:
            # What the dashboard does when a resume supersedes events it has shown: fold the log
            # again, up to the checkpoint the run goes on from.
            before = [e for e in read_events(self.run_dir).events if e.seq <= event.resumed_after_seq]
            self.state = apply_all(RunState(), before)
        if event.kind == "stage_changed" and self._folded(event.slot)[0] != str(event.from_stage):
            self.mismatches.append(f"seq {event.seq}: {event.slot} moves from {event.from_stage} but the log "
                                   f"had it {self._folded(event.slot)[0]}")
        live = self.trainer.host.slots if self.trainer is not None and event.kind == "epoch_completed" else {}
        for sid, slot in live.items():
            engine = (str(slot.stage), slot.blueprint if slot.stage is not Stage.DORMANT else None)
            if self._folded(sid) != engine:
                self.mismatches.append(f"epoch {event.epoch}: {sid} is {engine} in the engine, "
                                       f"{self._folded(sid)} in the log")
        apply(self.state, event)
        for sid, slot in live.items():
            if abs(self.state.slots[sid].report.alpha - slot.alpha) > 1e-9:
                self.mismatches.append(f"epoch {event.epoch}: {sid} alpha {slot.alpha} vs {self.state.slots[sid].report.alpha}")
        self.epochs_checked += bool(live)

    def flush(self, fsync: bool = False) -> None:
        pass

    def close(self) -> None:
        pass


class ScriptedServer:
    """Stands in for the control socket: hands the trainer `commands` at its first safe point at or
    after optimizer step `at_step` (exactly where an operator's commands would arrive)."""

    def __init__(self, trainer: Trainer, at_step: int, commands: list) -> None:
        self.trainer, self.at_step, self.commands = trainer, at_step, commands

    def has_pending(self) -> bool:
        return bool(self.commands) and self.trainer.step >= self.at_step

    def drain(self) -> list:
        if not self.has_pending():
            return []
        out, self.commands = self.commands, []
        return out

    def wait_for_command(self, timeout: float) -> bool:
        return self.has_pending()

    def close(self) -> None:
        pass


def mirrored(config, run_dir: Path, **kwargs) -> tuple[Trainer, LogMirror]:
    mirror = LogMirror(kwargs.pop("state", None), run_dir)
    trainer = Trainer(config, run_dir, sinks=(mirror,), serve_commands=False, **kwargs)
    trainer._build()
    mirror.trainer = trainer
    return trainer, mirror


def log_of(run_dir: Path):
    log = read_events(run_dir, strict=True)
    assert not log.problems
    return log.events


# ====================================================================== item 1: rollbacks
def test_a_rollback_keeps_the_operators_decisions_and_the_log_true(tmp_path):
    # 23 steps an epoch: the snapshot is taken at the end of epoch 1 (step 23), the operator acts
    # at step 26 and the loss turns NaN at step 30, in the same epoch.
    config = quick_config(epochs=4, autopilot=False, faults=FaultConfig(nan_loss_at_step=30))
    trainer, mirror = mirrored(config, tmp_path)
    for sid in ("block1", "block2"):
        assert trainer.bank.germinate(sid, "conv_light", "operator").passed
        assert trainer.bank.advance(sid, False, "operator").passed  # → TRAINING
    trainer.control.server = ScriptedServer(trainer, 26, [
        new_command("set_lr", value=0.0005),
        new_command("cull", slot="block2", reason="operator: not needed"),
        new_command("germinate", slot="block0", blueprint="conv_light"),
    ])
    assert trainer.run() == 0
    events = log_of(tmp_path)
    (rollback,) = [e for e in events if e.kind == "governor_rollback"]
    assert mirror.epochs_checked == 4 and mirror.mismatches == []
    # The operator's cull stands: block2 never comes back to life.
    story = [(str(e.from_stage), str(e.to_stage), e.cause) for e in events if e.kind == "stage_changed" and e.slot == "block2"]
    assert ("TRAINING", "CULLED", "operator") in story
    assert all(to in ("CULLED", "EMBARGOED", "DORMANT") for _, to, _ in story[story.index(("TRAINING", "CULLED", "operator")):])
    # The seeds live at the blow-up, including the one the operator had just germinated, are culled
    # by the governor, in the log.
    assert set(rollback.seeds_culled) == {"block0", "block1"}
    governor = {e.slot for e in events if e.kind == "stage_changed" and e.cause == "governor"}
    assert governor == {"block0", "block1"}
    # The lower learning rate the operator chose survives the rollback.
    assert trainer.bank.lr == 0.0005
    after = [e.lr for e in events if e.kind == "step_metrics" and e.seq > rollback.seq]
    assert after and set(after) == {0.0005}


@pytest.mark.parametrize("nan_at", [40, 75, 120])
def test_the_log_tells_the_engine_state_through_autopilot_and_rollbacks(tmp_path, nan_at):
    config = quick_config(epochs=10, faults=FaultConfig(nan_loss_at_step=nan_at))
    trainer, mirror = mirrored(config, tmp_path)
    assert trainer.run() == 0
    assert any(e.kind == "governor_rollback" for e in log_of(tmp_path))
    assert mirror.epochs_checked == 10 and mirror.mismatches == []


def test_the_log_tells_the_engine_state_across_a_crash_and_a_resume(tmp_path):
    config = quick_config(epochs=12, checkpoint_every=4)
    first, mirror = mirrored(config, tmp_path)
    run_epoch = first._run_epoch

    def crash_in_epoch_7() -> None:
        if first.epoch == 6:
            raise RuntimeError("simulated crash")
        run_epoch()

    first._run_epoch = crash_in_epoch_7
    assert first.run() == 1 and mirror.mismatches == []
    # The dashboard attaching afterwards folds the whole log, then follows the resumed run.
    resumed, mirror = mirrored(config, tmp_path, resume=True, state=apply_all(RunState(), log_of(tmp_path)))
    assert resumed.run() == 0
    assert mirror.epochs_checked == 12 - 4 and mirror.mismatches == []
    events = log_of(tmp_path)
    # Each epoch once: the epochs 5-6 of the crashed attempt are superseded by the resumed ones.
    assert [e.epoch for e in events if e.kind == "epoch_completed"] == list(range(1, 13))
    started = [e for e in events if e.kind == "run_started"]
    assert started[-1].resumed_from_epoch == 4 and started[-1].resumed_after_seq is not None
    # The checkpoint the run went on from stays in the story; the dead attempt's later one does not.
    assert [e.epoch for e in events if e.kind == "checkpoint_saved"] == [4, 8, 12, 12]
    final = apply_all(RunState(), events)
    for sid, slot in resumed.host.slots.items():
        assert final.slots[sid].stage == str(slot.stage)


# ====================================================================== item 4: log before checkpoint
def test_a_checkpoint_is_published_only_after_every_event_before_it_is_on_disk(tmp_path, monkeypatch):
    trainer = Trainer(quick_config(epochs=6, checkpoint_every=2), tmp_path, serve_commands=False)
    log = tmp_path / "events.jsonl"
    synced: list[int] = []  # the log's size at each fsync
    fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        fsync(fd)
        synced.append(os.fstat(fd).st_size)

    at_save: list[tuple[int, int, int, int]] = []
    save = checkpoint.save

    def watching(state, path):
        at_save.append((state["epoch"], last_seq(log), trainer.emitter.seq, synced[-1] if synced else -1))
        assert synced and synced[-1] == log.stat().st_size
        return save(state, path)

    monkeypatch.setattr(logwriter.os, "fsync", recording_fsync)
    monkeypatch.setattr(checkpoint, "save", watching)
    assert trainer.run() == 0
    assert [epoch for epoch, *_ in at_save] == [2, 4, 6, 6]
    # Everything emitted before the checkpoint (the epoch and the decisions after it) is in the
    # file, and was fsynced, before the checkpoint is renamed into place.
    assert all(on_disk == emitted for _, on_disk, emitted, _ in at_save), at_save


# ====================================================================== item 6: a full disk
class FullDisk:
    """os.write as on a disk with `room` bytes left for the log: partial writes, then ENOSPC."""

    def __init__(self, room: int) -> None:
        self.room, self.real = room, os.write

    def __call__(self, fd: int, data) -> int:
        size = os.fstat(fd).st_size
        left = self.room - size
        if left <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.real(fd, bytes(data[:left]))


def test_a_full_disk_stops_the_run_cleanly_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    config = quick_config(epochs=20, checkpoint_every=2)
    assert Trainer(config.model_copy(update={"epochs": 4}), tmp_path / "probe", serve_commands=False).run() == 0
    room = (tmp_path / "probe" / "events.jsonl").stat().st_size + 5000  # runs out in epoch ~5
    monkeypatch.setattr(logwriter.os, "write", FullDisk(room))
    code = Trainer(config, tmp_path / "run", serve_commands=False).run()
    err = capsys.readouterr().err
    assert code == 1
    assert "No space left on device" in err and "events.jsonl" in err
    kept = re.search(r"the checkpoint of epoch (\d+) in .* is intact", err)
    assert kept and "--resume" in err and "Traceback" not in err, err
    monkeypatch.undo()
    raw = (tmp_path / "run" / "events.jsonl").read_bytes()
    assert raw.endswith(b"\n"), "the log must end at a line boundary, never a torn line"
    log_of(tmp_path / "run")  # every line whole and valid (whether the final run_failed fitted or not)
    assert checkpoint.load_run(tmp_path / "run").epoch == int(kept.group(1)) >= 2
    # Space is back: the run continues from its last good checkpoint.
    assert Trainer(config, tmp_path / "run", resume=True, serve_commands=False).run() == 0
    assert [e.epoch for e in log_of(tmp_path / "run") if e.kind == "epoch_completed"] == list(range(1, 21))


def test_a_checkpoint_that_does_not_fit_stops_the_run_and_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    saves = []
    real = checkpoint.torch.save

    def failing_second(obj, f, *a, **k):
        saves.append(1)
        if len(saves) == 2:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *a, **k)

    monkeypatch.setattr(checkpoint.torch, "save", failing_second)
    code = Trainer(quick_config(epochs=8, checkpoint_every=2), tmp_path, serve_commands=False).run()
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot write checkpoint" in err and "No space left" in err and "checkpoint of epoch 2" in err
    events = log_of(tmp_path)
    assert events[-1].kind == "run_failed" and events[-1].error_type == "StorageError"
    assert checkpoint.load_run(tmp_path).epoch == 2
    # No half-written file left behind (the kept fork points live in checkpoints/, untouched).
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint") and p.is_file()) == \
        ["checkpoint.pt"]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["epoch-00002.pt"]


# ====================================================================== item 5: signals
def start_engine(run_dir: Path, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*ENGINE, "--run-dir", str(run_dir), "--epochs", "300", "--set", "min_epoch_seconds=0.1", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    log = run_dir / "events.jsonl"
    while (log.read_bytes() if log.exists() else b"").count(b'"epoch_completed"') < 3:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.05)
    return proc


def test_sigterm_is_a_graceful_stop(tmp_path):
    proc = start_engine(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    events = log_of(tmp_path)
    assert events[-1].kind == "run_finished" and events[-1].status == "stopped"
    assert events[-2].kind == "checkpoint_saved"
    done = [e.epoch for e in events if e.kind == "epoch_completed"]
    assert checkpoint.load_run(tmp_path).epoch == done[-1]


def test_a_headless_run_survives_its_terminal_hanging_up(tmp_path):
    proc = start_engine(tmp_path)
    proc.send_signal(signal.SIGHUP)
    seen = (tmp_path / "events.jsonl").read_bytes().count(b'"epoch_completed"')
    deadline = time.monotonic() + 60
    while (tmp_path / "events.jsonl").read_bytes().count(b'"epoch_completed"') < seen + 3:
        assert proc.poll() is None, "the engine died on SIGHUP"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    events = log_of(tmp_path)
    (warning,) = [e for e in events if e.kind == "warning" and e.code == "terminal_hung_up"]
    assert "esper-tui attach" in warning.message
    assert events[-1].kind == "run_finished"


# ====================================================================== item 7: each epoch once
def test_a_killed_run_resumed_shows_each_epoch_once(tmp_path):
    proc = start_engine(tmp_path)  # checkpoint_every=5 (default)
    log = tmp_path / "events.jsonl"
    deadline = time.monotonic() + 60
    while log.read_bytes().count(b'"epoch_completed"') < 8:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.kill()
    proc.wait(timeout=30)
    assert checkpoint.load_run(tmp_path).epoch == 5
    result = subprocess.run([*ENGINE, "--resume", str(tmp_path), "--epochs", "12"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    events = log_of(tmp_path)
    assert [e.epoch for e in events if e.kind == "epoch_completed"] == list(range(1, 13))
    assert events[-1].kind == "run_finished" and events[-1].final["epochs"] == 12


def test_after_a_failed_write_the_log_ends_at_a_whole_line_and_a_final_event_can_follow(tmp_path, monkeypatch):
    from engine.telemetry import RunFailed, StepMetrics

    disk = FullDisk(room=10_000)
    monkeypatch.setattr(logwriter.os, "write", disk)
    writer = logwriter.RunLogWriter(tmp_path / "events.jsonl", buffer_size=1 << 20)
    seq = 0
    with pytest.raises(logwriter.LogWriteError, match="No space left on device"):
        for seq in range(1, 1000):
            writer.write(StepMetrics(seq=seq, time=1.0, epoch=1, step=seq, loss=0.5, lr=0.01))
            if seq % 20 == 0:
                writer.flush()
    disk.room += 2_000  # some space comes back (or the cut-off tail freed it)
    writer.write(RunFailed(seq=seq + 1, time=2.0, epoch=1, step=seq, error_type="StorageError", message="disk full",
                           traceback=""))
    writer.close()
    raw = (tmp_path / "events.jsonl").read_bytes()
    assert b"\x00" not in raw and raw.endswith(b"\n")
    events = log_of(tmp_path)
    assert events[-1].kind == "run_failed" and [e.seq for e in events[:-1]] == list(range(1, len(events)))
