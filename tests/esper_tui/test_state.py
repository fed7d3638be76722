"""The dashboard's pure reducer, fed recorded run logs (no Textual, no torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


from engine.telemetry import read_events
from engine.telemetry.events import EpochCompleted, RunStarted, SlotReport, StageChanged
from esper_tui.state import (
    CRASHED,
    FINISHED,
    LOG_LINES,
    PAUSED,
    SLOT_HISTORY,
    Isolation,
    Restart,
    RunState,
    apply,
    apply_all,
    describe,
    note_problems,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def replay(name: str) -> RunState:
    return apply_all(RunState(), read_events(FIXTURES / name, strict=True).events)


def test_a_steered_run_reduces_to_what_the_operator_saw():
    state = replay("steered-run.jsonl")
    assert state.status == FINISHED
    assert (state.task, state.topology, state.planned_epochs) == ("digits", "cnn", 26)
    assert state.isolation == Isolation(detach=True, source="default")
    assert list(state.slots) == ["block1", "block2"]
    assert len(state.history) == 26 and state.history[-1].epoch == 26
    # The operator's commands: each answered, rejections with their reason.
    assert state.answers["op-germ"].applied
    assert not state.answers["op-adv2"].applied and "G2 failed" in state.answers["op-adv2"].reason
    assert not state.answers["op-bad"].applied and "unknown slot 'block7'" in state.answers["op-bad"].reason
    assert state.answers["op-force"].applied
    # The forced edge is marked, and the failing gate result that was bypassed is kept.
    log = [line.text for line in state.log]
    assert any("TRAINING -> BLENDING (operator FORCED)" in text for text in log)


def test_slot_cards_follow_the_last_epoch_report():
    events = read_events(FIXTURES / "steered-run.jsonl").events
    state = apply_all(RunState(), events)
    last = [e for e in events if e.kind == "epoch_completed"][-1]
    for report in last.slots:
        view = state.slots[report.slot]
        later = [e for e in events if e.kind == "stage_changed" and e.slot == report.slot and e.seq > last.seq]
        assert view.stage == (str(later[-1].to_stage) if later else str(report.stage))
    assert all(len(v.alpha_history) <= SLOT_HISTORY for v in state.slots.values())


def test_unmeasured_values_stay_missing_not_zero():
    state = RunState()
    apply(state, RunStarted(seq=1, time=0, epoch=0, step=0, run_id="r", config={}, task="digits", topology="cnn",
                            slots=("block1",), isolation={"blend_detach": True, "source": "default"}, device="cpu",
                            planned_epochs=10))
    apply(state, EpochCompleted(seq=2, time=1, epoch=1, step=5, train_loss=None, train_accuracy=None, val_loss=1.0,
                                val_accuracy=50.0, slots=(SlotReport(slot="block1", stage="TRAINING", blueprint="norm"),)))
    view = state.slots["block1"]
    assert view.report.grad_ratio is None and view.report.counterfactual is None
    assert list(view.ratio_history) == [None]
    assert state.history[-1].train_loss is None


def test_pause_and_crash_statuses():
    state = replay("crashed-run.jsonl")
    assert state.status == CRASHED
    error_type, message, traceback = state.failure
    assert error_type == "RuntimeError" and "crash requested at epoch 5" in message and "Traceback" in traceback
    assert state.log[-1].level == "error"
    steered = read_events(FIXTURES / "steered-run.jsonl").events
    upto_pause = [e for e in steered if e.seq <= next(x.seq for x in steered if x.kind == "run_paused")]
    assert apply_all(RunState(), upto_pause).status == PAUSED


def test_stage_change_resets_alpha_and_clears_a_dormant_slot():
    state = RunState()
    apply(state, StageChanged(seq=1, time=0, epoch=3, step=9, slot="block1", seed_id="block1#1", blueprint="norm",
                              from_stage="PROBATIONARY", to_stage="CULLED", cause="timeout", forced=False, reason="r"))
    assert state.slots["block1"].stage == "CULLED" and state.slots["block1"].report.alpha == 0.0
    apply(state, StageChanged(seq=2, time=0, epoch=4, step=9, slot="block1", seed_id="block1#1", blueprint="norm",
                              from_stage="EMBARGOED", to_stage="DORMANT", cause="embargo", forced=False, reason="over"))
    assert state.slots["block1"].report.blueprint is None


def test_histories_are_bounded_for_long_runs():
    state = RunState()
    report = SlotReport(slot="block1", stage="BLENDING", alpha=0.5)
    for i in range(1, LOG_LINES * 3):
        apply(state, EpochCompleted(seq=i, time=i, epoch=i, step=i, train_loss=1.0, train_accuracy=1.0, val_loss=1.0,
                                    val_accuracy=1.0, slots=(report,)))
        apply(state, StageChanged(seq=10**6 + i, time=i, epoch=i, step=i, slot="block1", from_stage="TRAINING",
                                  to_stage="BLENDING", cause="gate", forced=False, reason="x"))
    assert len(state.log) == LOG_LINES
    assert len(state.slots["block1"].alpha_history) == SLOT_HISTORY


def test_high_rate_metrics_are_not_log_lines():
    events = read_events(FIXTURES / "steered-run.jsonl").events
    assert all(describe(e) is None for e in events if e.kind in ("step_metrics", "epoch_completed"))


def test_the_reducer_never_loads_torch():
    code = "import sys, esper_tui.state, esper_tui.sources; assert 'torch' not in sys.modules, 'torch loaded'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_log_problems_become_log_lines_and_a_count_of_skipped_lines():
    state = replay("steered-run.jsonl")
    lines_before = len(state.log)
    problems = ["line 4 skipped: not a valid event: Invalid JSON", "line 9: seq 7 comes after seq 8; kept"]
    note_problems(state, problems[:1], skipped=1)
    note_problems(state, problems, skipped=1)  # each tick passes them all: only new ones are added
    note_problems(state, problems, skipped=1)
    assert [line.text for line in state.log][lines_before:] == problems
    assert state.skipped_lines == 1 and state.log[-1].level == "warning"


def test_a_restart_starts_the_state_afresh_and_what_follows_rebuilds_it():
    events = read_events(FIXTURES / "steered-run.jsonl").events
    state = apply_all(RunState(), events[:200])
    note_problems(state, ["line 2 skipped: x"], skipped=1)
    fresh = apply(state, Restart("a resume superseded epochs 4-5"))
    assert fresh is not state and fresh.version > state.version  # the screen redraws
    assert fresh.history == RunState().history and not fresh.log and fresh.skipped_lines == 0
    for event in events:
        fresh = apply(fresh, event)
    assert [line.text for line in fresh.log] == [line.text for line in replay("steered-run.jsonl").log]
