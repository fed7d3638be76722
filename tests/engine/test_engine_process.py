"""The engine as its own process, steered over its real control socket, as the dashboard will."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.control import ControlClient
from engine.telemetry import read_events

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def start_engine(run_dir: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "engine", "train", "--preset", "quick", "--run-dir", str(run_dir), "--quiet", *args]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def events(run_dir: Path):
    path = run_dir / "events.jsonl"
    return read_events(path).events if path.exists() else []


def answer(run_dir: Path, command_id: str):
    """The engine's one answer (command_applied / command_rejected) to a command id."""
    def find():
        found = [e for e in events(run_dir) if e.kind in ("command_applied", "command_rejected")
                 and e.command_id == command_id]
        return found or None
    found = wait_for(find, f"the answer to {command_id}")
    return found[0]


def test_operator_steers_a_running_engine_over_the_socket(run_dir):
    proc = start_engine(run_dir, "--no-autopilot", "--epochs", "500")
    try:
        wait_for(lambda: (run_dir / "control.sock").exists(), "the control socket")
        assert (run_dir / "control.sock").stat().st_mode & 0o777 == 0o600
        assert run_dir.stat().st_mode & 0o777 == 0o700
        with ControlClient(run_dir) as client:
            def send(cid, command, **fields):
                reply = client.send({"id": cid, "command": command, **fields})
                assert reply == {"ok": True, "id": cid, "status": "received"}
                return answer(run_dir, cid)

            assert send("p1", "pause").kind == "command_applied"
            wait_for(lambda: any(e.kind == "run_paused" for e in events(run_dir)), "run_paused")

            # While paused, the engine still answers every command at its safe point.
            assert send("g1", "germinate", slot="block1", blueprint="conv_light").kind == "command_applied"
            adv = send("a1", "advance", slot="block1")  # G1 passes: GERMINATED -> TRAINING
            assert adv.kind == "command_applied"
            refused = send("a2", "advance", slot="block1")  # G2 needs 3 epochs in TRAINING
            assert refused.kind == "command_rejected" and "G2 failed" in refused.reason
            assert "needs epochs in stage ≥ 3 (now 0)" in refused.reason
            forced = send("f1", "force_advance", slot="block1")
            assert forced.kind == "command_applied"
            assert send("c1", "cull", slot="block1", reason="testing cull").kind == "command_applied"

            illegal = send("x1", "advance", slot="block2")
            assert illegal.kind == "command_rejected" and "DORMANT" in illegal.reason
            occupied = send("x2", "germinate", slot="block1", blueprint="norm")
            assert occupied.kind == "command_rejected" and "needs slot DORMANT (now CULLED)" in occupied.reason
            unknown_slot = send("x3", "fossilize", slot="block9")
            assert unknown_slot.kind == "command_rejected" and "unknown slot 'block9'" in unknown_slot.reason
            unknown_bp = send("x4", "germinate", slot="block2", blueprint="nope")
            assert unknown_bp.kind == "command_rejected" and "needs blueprint registered (now nope)" in unknown_bp.reason
            malformed = client.send("{this is not json")
            assert malformed["ok"] is False and "not JSON" in malformed["error"]

            assert send("r1", "resume").kind == "command_applied"
            assert send("s1", "stop").kind == "command_applied"
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = events(run_dir)
    assert log[-1].kind == "run_finished" and log[-1].status == "stopped"
    # Exactly one answer per command id, and every command was first acknowledged as received.
    answers = [e.command_id for e in log if e.kind in ("command_applied", "command_rejected")]
    assert sorted(answers) == sorted(set(answers))
    received = {e.command_id for e in log if e.kind == "command_received"}
    assert set(answers) == received
    moves = [(str(e.from_stage), str(e.to_stage), e.cause, e.forced) for e in log if e.kind == "stage_changed"]
    assert moves == [
        ("DORMANT", "GERMINATED", "operator", False),
        ("GERMINATED", "TRAINING", "operator", False),
        ("TRAINING", "BLENDING", "operator", True),
        ("BLENDING", "CULLED", "operator", False),
    ] + moves[4:]
    forced_change = [e for e in log if e.kind == "stage_changed" and e.forced][0]
    assert forced_change.gate is not None and not forced_change.gate.passed  # the failing G2 is kept
    assert not (run_dir / "control.sock").exists()


def test_a_killed_engine_leaves_a_readable_log_and_can_resume(run_dir):
    proc = start_engine(run_dir, "--epochs", "500", "--set", "checkpoint_every=1")
    try:
        wait_for(lambda: sum(e.kind == "checkpoint_saved" for e in events(run_dir)) >= 2, "two checkpoints")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = read_events(run_dir / "events.jsonl")
    assert all(p.kind == "truncated" for p in log.problems)  # at most the line being written is lost
    done = max(e.epoch for e in log.events if e.kind == "epoch_completed")
    resumed = subprocess.run(
        [sys.executable, "-m", "engine", "train", "--resume", str(run_dir), "--epochs", str(done + 2), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    after = read_events(run_dir / "events.jsonl", strict=True)
    assert after.events[-1].kind == "run_finished"
    assert [e.resumed for e in after.events if e.kind == "run_started"] == [False, True]


def test_headless_cli_exit_codes(tmp_path):
    crash = subprocess.run(
        [sys.executable, "-m", "esper_tui", "train", "--headless", "--preset", "quick", "--run-dir", str(tmp_path / "c"),
         "--set", "faults.crash_at_epoch=2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert crash.returncode == 1
    assert "run failed: RuntimeError: fault drill: crash requested at epoch 2" in crash.stdout
    assert read_events(tmp_path / "c").events[-1].kind == "run_failed"

    missing = subprocess.run(
        [sys.executable, "-m", "esper_tui", "train", "--headless", "--task", "cifar10", "--data-dir",
         str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "m")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    # Missing data is a usage error, not a crash: one line, exit 2, nothing left behind.
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "CIFAR-10 not found" in missing.stderr and "--data-dir" in missing.stderr
    assert not (tmp_path / "m").exists()

    bad = subprocess.run([sys.executable, "-m", "esper_tui", "train", "--headless", "--set", "epochs=0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "epochs" in bad.stderr
