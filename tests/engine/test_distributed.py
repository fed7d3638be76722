"""Distributed runs: two CPU processes under torchrun (gloo), every decision taken once, applied on both.

The process tests start the real `python -m torch.distributed.run --nproc_per_node 2 -m engine train`
and read what a user reads: rank 0's run log (`ranks_verified` after every structural change,
stage changes, answers to commands) and the exit code. The unit tests check the pure parts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.commands import AdvanceCommand
from engine.config import quick_config
from engine.decisions import Decision, apply_decision
from engine.distributed import Orders, Rollback, describe_act, diverged_ranks, state_checksum
from engine.lifecycle import Stage
from engine.seedbank import SeedBank
from engine.tasks import load_task
from engine.trainer import build_host
from tests.engine.test_engine_process import answer, events, wait_for

ROOT = Path(__file__).resolve().parents[2]
DRILL_TIMEOUT_S = 8


def torchrun(run_dir: Path, *args: str, launcher: tuple[str, ...] = ()) -> subprocess.Popen:
    """Two ranks of the quick preset on CPU, rank 0 writing RUN_DIR (the command as the README gives it)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *launcher,
           "-m", "engine", "train", "--headless", "--preset", "quick", "--device", "cpu", "--quiet", *args]
    if "--resume" not in args:
        cmd += ["--run-dir", str(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"torchrun did not end within {timeout} s:\n{err[-3000:]}")
    return proc.returncode, err


def kinds(run_dir: Path, kind: str) -> list:
    return [e for e in events(run_dir) if e.kind == kind]


# ---------------------------------------------------------------------------------------- pure parts
def test_checksum_sees_one_changed_weight_and_a_changed_stage():
    torch.manual_seed(0)
    task = load_task("digits")
    host = build_host(task, quick_config())
    bank = SeedBank(host, quick_config().optim, lambda *a, **k: None)
    before = state_checksum(host, bank.version, 0)
    assert state_checksum(host, bank.version, 0) == before
    with torch.no_grad():
        next(host.parameters()).view(-1)[0].add_(1e-7)
    nudged = state_checksum(host, bank.version, 0)
    assert nudged["params"] != before["params"] and nudged["lifecycle"] == before["lifecycle"]
    bank.germinate("block1", "conv_light", "operator")
    moved = state_checksum(host, bank.version, 0)
    assert moved["lifecycle"] != nudged["lifecycle"]
    assert state_checksum(host, bank.version, 1)["lifecycle"] != moved["lifecycle"]  # one step apart
    assert diverged_ranks([moved, moved, nudged]) == [2]
    assert diverged_ranks([moved, moved]) == []


def test_a_follower_applies_the_leaders_advance_even_where_its_own_gate_fails():
    torch.manual_seed(0)
    host = build_host(load_task("digits"), quick_config())
    bank = SeedBank(host, quick_config().optim, lambda *a, **k: None)
    bank.germinate("block1", "conv_light", "operator")
    bank.advance("block1", False, "operator")  # G1 passes: TRAINING
    assert host.slots["block1"].stage is Stage.TRAINING
    advance = Decision(AdvanceCommand(slot="block1"), "gate", "G2 passed on rank 0")
    assert not apply_decision(bank, advance).applied  # this replica has no gradient ratio: G2 fails here
    assert apply_decision(bank, advance, follow=True).applied
    assert host.slots["block1"].stage is Stage.BLENDING


def test_orders_name_what_changed():
    acts = (Decision.germinate("block1", "conv_light", "autopilot"), Rollback("nan", float("nan")))
    assert [describe_act(a) for a in acts] == ["germinate block1 (autopilot)", "rollback (nan)"]
    assert Orders().acts == () and not Orders().wait and Orders().stop is None


def test_under_torchrun_a_run_directory_must_be_named(monkeypatch, capsys):
    from engine import launch

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launch.main(["train", "--headless", "--preset", "quick"]) == 2
    assert "under torchrun give --run-dir (or --resume RUN_DIR)" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- two ranks
def test_operator_lifecycle_is_applied_on_both_ranks_and_they_stay_identical(run_dir):
    proc = torchrun(run_dir, "--no-autopilot", "--epochs", "6", "--set", "min_epoch_seconds=0.4")
    try:
        wait_for(lambda: (run_dir / "control.sock").exists(), "the control socket", timeout=120)
        from engine.control import ControlClient

        with ControlClient(run_dir) as client:
            def send(cid, command, **fields):
                assert client.send({"id": cid, "command": command, **fields})["status"] == "received"
                return answer(run_dir, cid)

            assert send("p", "pause").kind == "command_applied"
            # While rank 0 is paused its heartbeats carry these moves to rank 1.
            assert send("g", "germinate", slot="block1", blueprint="conv_light").kind == "command_applied"
            assert send("a1", "force_advance", slot="block1").kind == "command_applied"
            assert send("r", "resume").kind == "command_applied"
            wait_for(lambda: len(kinds(run_dir, "epoch_completed")) >= 2, "two epochs", timeout=120)
            for i in range(4):  # TRAINING → BLENDING → SHADOWING → PROBATIONARY → FOSSILIZED
                assert send(f"f{i}", "force_advance", slot="block1").kind == "command_applied"
            assert send("g2", "germinate", slot="block2", blueprint="conv_light").kind == "command_applied"
            assert send("c", "cull", slot="block2", reason="test").kind == "command_applied"
            assert send("lr", "set_lr", value=0.02).kind == "command_applied"
        code, err = finish(proc)
    finally:
        proc.kill()
    assert code == 0, err[-3000:]
    started = kinds(run_dir, "run_started")[0]
    assert started.distributed["world_size"] == 2 and started.distributed["backend"] == "gloo"
    verified = kinds(run_dir, "ranks_verified")
    assert verified and all(v.in_sync and len(v.checksums) == 2 for v in verified), verified
    assert verified[0].trigger == "start" and verified[-1].trigger == "end"
    triggers = " | ".join(v.trigger for v in verified)
    for move in ("germinate block1 (operator)", "force_advance block1 (operator)", "cull block2 (operator)"):
        assert move in triggers
    stages = [(e.slot, str(e.to_stage)) for e in kinds(run_dir, "stage_changed")]
    # The culled slot's embargo may run out before the end, adding a ninth change.
    assert stages[:8] == [("block1", "GERMINATED"), ("block1", "TRAINING"), ("block1", "BLENDING"),
                          ("block1", "SHADOWING"), ("block1", "PROBATIONARY"), ("block1", "FOSSILIZED"),
                          ("block2", "GERMINATED"), ("block2", "CULLED")], stages
    assert kinds(run_dir, "run_finished")[0].status == "completed"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted two-rank autopilot run (the baseline the drills are compared with)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="esp-ref-", dir="/tmp"))
    code, err = finish(torchrun(path, "--epochs", "9", "--set", "checkpoint_every=1"))
    assert code == 0, err[-3000:]
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def test_ranks_whose_local_numbers_disagree_still_make_one_set_of_decisions(run_dir, reference):
    skew = '{"kind": "skew", "rank": 1, "epoch": 1}'
    code, err = finish(torchrun(run_dir, "--epochs", "3", "--set", "checkpoint_every=1",
                                "--set", f"faults.rank_drill={skew}"))
    assert code == 0, err[-3000:]
    base = kinds(reference, "epoch_completed")[0]
    skewed = kinds(run_dir, "epoch_completed")[0]
    # Rank 1 added 1.0 to the loss of each of its 167 validation examples (batches 1, 3, 5 of 6: 64, 64
    # and 39): the logged number is the reduced one, over both shards' 359 examples.
    assert skewed.val_loss == pytest.approx(base.val_loss + 167 / 359, abs=1e-5)
    assert skewed.val_accuracy == pytest.approx(base.val_accuracy)
    assert all(v.in_sync for v in kinds(run_dir, "ranks_verified"))
    assert kinds(run_dir, "run_finished")[0].status == "completed"


def test_a_restarted_job_resumes_with_its_morphology(run_dir, reference):
    """torchrun --max-restarts: rank 1 dies at epoch 8; the restart resumes from epoch 7's checkpoint
    and the run ends exactly as the uninterrupted one did (CPU, same seed)."""
    drill = '{"kind": "exit", "rank": 1, "epoch": 8}'
    code, err = finish(torchrun(run_dir, "--epochs", "9", "--set", "checkpoint_every=1",
                                "--set", f"faults.rank_drill={drill}", launcher=("--max-restarts", "1")))
    assert code == 0, err[-3000:]
    runs = kinds(run_dir, "run_started")
    assert len(runs) == 2 and runs[1].resumed and runs[1].resumed_from_epoch == 7
    assert any(v.trigger == "resume" and v.in_sync for v in kinds(run_dir, "ranks_verified"))
    stages_before = {r.slot: (str(r.stage), r.blueprint) for r in kinds(reference, "epoch_completed")[6].slots}
    assert any(stage != "DORMANT" for stage, _ in stages_before.values()), "the reference grew nothing by epoch 7"

    def journey(path: Path):
        return [(e.epoch, round(e.val_loss, 5), [(r.slot, str(r.stage), r.blueprint, r.alpha) for r in e.slots])
                for e in kinds(path, "epoch_completed")]

    assert journey(run_dir) == journey(reference)


def test_resume_under_torchrun_goes_on_from_the_checkpoint_on_every_rank(run_dir, reference):
    import shutil

    shutil.copytree(reference, run_dir, dirs_exist_ok=True)
    code, err = finish(torchrun(run_dir, "--resume", str(run_dir), "--epochs", "11"))
    assert code == 0, err[-3000:]
    runs = kinds(run_dir, "run_started")
    assert len(runs) == 2 and runs[1].resumed_from_epoch == 9 and runs[1].distributed["world_size"] == 2
    assert [e.epoch for e in kinds(run_dir, "epoch_completed")] == list(range(1, 12))
    resumed = [v for v in kinds(run_dir, "ranks_verified") if v.trigger == "resume"]
    assert len(resumed) == 1 and resumed[0].in_sync  # every rank loaded the same state
    # The morphology came back: every seed of epoch 9 is still there at epoch 10 (unless culled since).
    seeds = {r.slot: (r.seed_id, r.blueprint) for r in kinds(reference, "epoch_completed")[-1].slots if r.seed_id}
    assert seeds, "the reference grew nothing in 9 epochs"
    culled = {e.slot for e in kinds(run_dir, "stage_changed") if e.epoch == 10 and str(e.to_stage) == "CULLED"}
    tenth = next(e for e in kinds(run_dir, "epoch_completed") if e.epoch == 10)
    assert {r.slot: (r.seed_id, r.blueprint) for r in tenth.slots if r.slot in seeds and r.slot not in culled} == \
        {slot: seed for slot, seed in seeds.items() if slot not in culled}


def test_replicas_that_drift_apart_stop_the_run_naming_the_rank(run_dir):
    drill = '{"kind": "perturb", "rank": 1, "epoch": 2}'
    code, err = finish(torchrun(run_dir, "--no-autopilot", "--epochs", "3", "--set", f"faults.rank_drill={drill}"))
    assert code != 0
    last = events(run_dir)[-1]
    assert last.kind == "run_failed" and last.error_type == "RanksDiverged"
    assert "rank 1 differs from rank 0" in last.message
    verdict = kinds(run_dir, "ranks_verified")[-1]
    assert not verdict.in_sync and verdict.diverged == (1,)


@pytest.mark.parametrize("kind", ["exit", "hang"])
def test_a_rank_that_dies_or_hangs_ends_the_run_in_bounded_time(run_dir, kind):
    drill = f'{{"kind": "{kind}", "rank": 1, "epoch": 2}}'
    started = time.monotonic()
    code, err = finish(torchrun(run_dir, "--no-autopilot", "--epochs", "50",
                                "--set", f"collective_timeout_s={DRILL_TIMEOUT_S}",
                                "--set", f"faults.rank_drill={drill}"), timeout=120)
    elapsed = time.monotonic() - started
    assert code != 0
    assert elapsed < 60, f"took {elapsed:.0f} s"
    log = events(run_dir)
    assert log[-1].kind in ("run_failed", "run_finished"), log[-1]
    assert len(kinds(run_dir, "epoch_completed")) == 1
    if kind == "hang":  # nobody killed rank 1: rank 0's own timeout ended it
        assert log[-1].kind == "run_failed" and "did not answer" in log[-1].message
