"""The one describer: every event in the words the headless printer and the dashboard both show."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.gates import GateCheck
from engine.telemetry import read_events
from engine.telemetry.describe import CATEGORIES, KIND_CATEGORY, category_of, checkpoint_words, describe
from engine.telemetry.events import (
    EVENT_KINDS,
    EVENT_TYPES,
    AutopilotWaiting,
    CheckpointSaved,
    CommandApplied,
    CommandRejected,
    ControllerDecision,
    GateEvaluated,
    GovernorRollback,
    RanksVerified,
    RunFinished,
    RunStarted,
    StageChanged,
    WarningEvent,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def at(epoch: int = 3, seq: int = 10) -> dict:
    return {"seq": seq, "time": 0.0, "epoch": epoch, "step": epoch * 10}


def cull(cause: str, reason: str) -> StageChanged:
    return StageChanged(**at(12), slot="block1", seed_id="block1#1", blueprint="norm", cause=cause, reason=reason,
                        **{"from": "PROBATIONARY", "to": "CULLED"})


def test_every_kind_has_a_category_from_the_closed_list():
    assert set(CATEGORIES) == {"lifecycle", "gates", "operator", "autopilot", "governor", "warnings", "checkpoints",
                               "run", "metrics"}
    assert set(EVENT_KINDS) <= set(KIND_CATEGORY)
    assert set(KIND_CATEGORY.values()) <= set(CATEGORIES)
    assert category_of("log_problem") == "warnings"  # the reader's own problems with a log
    assert category_of("ranks_verified") == "run"  # a kind added later still lands somewhere


def test_both_readers_use_the_same_words_for_a_recorded_run():
    from engine.telemetry import ProgressPrinter
    from esper_tui.state import RunState, apply_all

    events = read_events(FIXTURES / "steered-run.jsonl", strict=True).events
    dashboard = [line.text for line in apply_all(RunState(), events).log]
    printer = ProgressPrinter()
    printed = [line.strip() for e in events if (line := printer.format(e)) is not None]
    shared = [text for text in dashboard if text in printed]
    assert len(shared) == len(dashboard)  # every line of the event log reads the same in the batch log
    assert any(line.startswith("epoch 26/26") for line in printed)  # and the printer adds its epoch lines


def test_a_fall_in_accuracy_is_not_a_gain():
    """Older logs say "accuracy gained -3.34"; read now, they say what happened."""
    decision = ControllerDecision(**at(), action="germinate", slot="block2", blueprint="norm",
                                  reason="plateau: accuracy gained -3.34 points over 3 epochs (< 0.5) and the host "
                                         "is stable")
    text = describe(decision).text
    assert "accuracy changed by -3.34 points" in text and "gained" not in text
    assert text.startswith("autopilot: germinate norm in block2 (plateau:")
    assert describe(decision).category == "autopilot"


def test_a_cull_for_no_credit_does_not_read_as_a_timeout():
    early = describe(cull("timeout", "credit -0.40 [-1.10, -0.05] points (shadow_twin): even its upper bound is "
                                     "<= 0 during probation"))
    assert "(timeout)" not in early.text and "timed out" not in early.text
    assert early.text.startswith("block1: PROBATIONARY -> CULLED (credit ≤ 0 during probation): credit -0.40")
    late = describe(cull("timeout", "probation timed out after 5 epochs: G5 failed: needs credit's lower bound ≥ 1"))
    assert late.text == ("block1: PROBATIONARY -> CULLED (probation timed out after 5 epochs): G5 failed: needs "
                         "credit's lower bound ≥ 1")
    assert early.level == late.level == "warning" and early.stage == "CULLED" and early.category == "lifecycle"


def test_operator_commands_say_who_did_what_and_why():
    cmd = {"id": "c1", "command": "cull", "slot": "block2", "reason": "operator cull from the dashboard"}
    applied = describe(CommandApplied(**at(), command_id="c1", command=cmd))
    assert applied.text == "operator: cull block2 (reason: operator cull from the dashboard): applied"
    assert applied.category == "operator" and applied.level == "info"
    rejected = describe(CommandRejected(**at(), command_id="c2", command={"command": "advance", "slot": "block1"},
                                        reason="G2 failed: needs epochs in stage ≥ 3 (now 1)"))
    assert rejected.text == "operator: advance block1: rejected: G2 failed: needs epochs in stage ≥ 3 (now 1)"
    assert rejected.level == "error" and rejected.gate == "G2"  # a gate's verdict, findable under gates
    assert describe(CommandApplied(**at(), command_id="c3", command={"command": "germinate", "slot": "block1",
                                                                     "blueprint": "lora"})).text == \
        "operator: germinate lora in block1: applied"
    assert describe(CommandApplied(**at(), command_id="c4", command={"command": "set_lr", "value": 0.001})).text == \
        "operator: set learning rate to 0.001: applied"
    assert describe(CommandApplied(**at(), command_id="c5", command={"command": "autopilot", "enabled": False})).text \
        == "operator: autopilot off: applied"
    assert describe(CommandApplied(**at(), command_id="c6", command={"command": "force_advance", "slot": "b"})).text \
        == "operator: force-advance b: applied"


def test_stage_changes_name_their_cause_and_gate():
    gated = describe(StageChanged(**at(), slot="block1", cause="gate", reason="G2 passed",
                                  **{"from": "TRAINING", "to": "BLENDING"}))
    assert gated.text == "block1: TRAINING -> BLENDING (G2 passed)"
    forced = describe(StageChanged(**at(), slot="block2", cause="operator", forced=True,
                                   reason="forced past G2 failed: needs epochs in stage ≥ 3 (now 0)",
                                   **{"from": "TRAINING", "to": "BLENDING"}))
    assert forced.text.startswith("block2: TRAINING -> BLENDING (operator FORCED): forced past G2 failed")
    assert forced.level == "warning" and forced.stage == "BLENDING"
    germinated = describe(StageChanged(**at(), slot="block1", blueprint="norm", cause="autopilot",
                                       reason="germinated norm", **{"from": "DORMANT", "to": "GERMINATED"}))
    assert germinated.text == "block1: DORMANT -> GERMINATED (autopilot)"  # the germination line says the rest
    rolled = describe(StageChanged(**at(), slot="block1", cause="governor", reason="governor: nan loss while this "
                                   "seed was live", **{"from": "BLENDING", "to": "CULLED"}))
    assert rolled.text == "block1: BLENDING -> CULLED (governor): nan loss while this seed was live"


def test_no_isolation_jargon_and_no_paths():
    started = describe(RunStarted(**at(0, 1), run_id="r1", config={}, task="text", topology="transformer",
                                  slots=("layer1",), isolation={"blend_detach": False, "source": "default"},
                                  device="cpu", planned_epochs=20)).text
    assert "detach" not in started
    assert started == ("run r1 started: task text, transformer host on cpu, 20 epochs, slots layer1; "
                       "host learns through blending seeds (default)")
    saved = describe(CheckpointSaved(**at(10), path="/home/me/runs/20260101-digits/checkpoint.pt"))
    assert saved.text == "checkpoint saved (epoch 10)" and saved.category == "checkpoints"


def test_checkpoint_runs_fold_into_words():
    assert checkpoint_words([5]) == "checkpoint saved (epoch 5)"
    assert checkpoint_words([5, 10, 15]) == "checkpoints saved at epochs 5, 10, 15"
    assert checkpoint_words(list(range(5, 45, 5))) == "checkpoints saved at epochs 5, 10, …, 40 (8 saves)"


def test_the_rest_reads_as_sentences():
    rollback = describe(GovernorRollback(**at(), trigger="nan", loss=None, restored_epoch=6, seeds_culled=("s1",)))
    assert rollback.text == "governor: loss was NaN; rolled back to epoch 6, culled s1"
    assert rollback.category == "governor" and rollback.level == "error"
    warning = describe(WarningEvent(**at(), slot="block1", code="ratio_near_threshold",
                                    message="slot block1: gradient ratio 0.21 is within 20% above the G2 threshold"))
    assert warning.text == "warning block1: gradient ratio 0.21 is within 20% above the G2 threshold"
    finished = describe(RunFinished(**at(26), status="completed", final={"val_loss": 0.34, "val_accuracy": 90.81,
                                                                        "epochs": 26.0, "seeds_fossilized": 1.0}))
    assert finished.text == "run completed: val accuracy 90.8%, val loss 0.34, epochs 26, seeds fossilized 1"
    waiting = describe(AutopilotWaiting(**at(), reason="host not stable: val loss -4.1 %/epoch"))
    assert waiting.text == "autopilot waits: host not stable: val loss -4.1 %/epoch"
    assert describe(AutopilotWaiting(**at(), reason=None)) is None  # no longer waiting: nothing to say
    gate = describe(GateEvaluated(**at(), slot="block1", gate="G2", target="BLENDING", passed=False, checks=(
        GateCheck(name="epochs_in_stage", value=1, threshold=3, passed=False, op=">="),)))
    assert gate.text == "block1: G2 to BLENDING fails: needs epochs in stage ≥ 3 (now 1)"
    assert gate.category == "gates" and gate.gate == "G2"


def test_rank_checks_say_when_and_which_rank_differs():
    same, other = {"params": "aa", "lifecycle": "bb"}, {"params": "ab", "lifecycle": "bb"}

    def verified(trigger, *sums, diverged=()):
        return describe(RanksVerified(**at(), in_sync=not diverged, checksums=sums, diverged=diverged, trigger=trigger))

    assert verified("germinate block1 (operator)", same, same).text == \
        "2 ranks in sync after germinate block1 (operator)"
    assert verified("end", same, same, same).text == "3 ranks in sync at the end of the run"
    diverged = verified("advance block1 (gate)", same, other, diverged=(1,))
    assert diverged.text == "ranks DIVERGED after advance block1 (gate): rank 1 differs from rank 0"
    assert diverged.level == "error" and diverged.category == "run"
    started = describe(RunStarted(**at(0), run_id="r", config={}, task="digits", topology="cnn", slots=["block1"],
                                  isolation={}, device="cpu", versions={}, planned_epochs=5,
                                  distributed={"world_size": 2, "backend": "gloo", "rank": 0}))
    assert started.text.endswith("; 2 ranks (gloo)")


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_every_kind_is_described_in_words_not_as_its_name(kind):
    from tests.engine.test_telemetry import every_kind

    event = next(e for e in every_kind() if e.kind == kind)
    words = describe(event)
    assert words is not None and words.text and words.category == KIND_CATEGORY[kind]
    assert words.text not in (kind, kind.replace("_", " "))  # said in words, not by its name
    assert EVENT_TYPES[kind] is type(event)


def test_describe_imports_without_torch_or_the_ui():
    code = "import sys, json, engine.telemetry.describe; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert not {"torch", "textual", "rich", "esper_tui"} & {name.split(".")[0] for name in json.loads(out)}
