"""The event contract (SPEC §7): every kind round-trips through JSON, the Emitter, progress lines."""

import io
import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.gates import GateInputs, evaluate
from engine.lifecycle import Stage
from engine.telemetry import (
    EVENT_ADAPTER,
    EVENT_KINDS,
    AutopilotWaiting,
    EVENT_TYPES,
    LIFECYCLE_KINDS,
    SCHEMA_VERSION,
    CheckpointSaved,
    CommandApplied,
    CommandReceived,
    CommandRejected,
    ControllerDecision,
    Emitter,
    EpochCompleted,
    FanOut,
    GateEvaluated,
    GovernorRollback,
    ListSink,
    ProgressPrinter,
    RunFailed,
    RunFinished,
    RanksVerified,
    RunPaused,
    RunResumed,
    RunStarted,
    SeedGerminated,
    SlotReport,
    StageChanged,
    StepMetrics,
    WarningEvent,
)

STAMP = dict(time=1_700_000_000.5, epoch=3, step=120)
NAN, INF = float("nan"), float("inf")


def g2_result(**kw):
    kw = {"epochs_in_stage": 3, "grad_ratio": 0.31, "seed_grad_norm": 2.0, **kw}
    return evaluate("G2", GateInputs(slot_id="block1", topology="cnn", stage=Stage.TRAINING, **kw))


def every_kind():
    """One event of each kind (two stage changes: by gate and forced), stamped with seq 1…n."""
    passed, failing = g2_result(), g2_result(grad_ratio=0.01)
    slots = (
        dict(slot="block1", stage=Stage.TRAINING, blueprint="conv_light", seed_id="s1", epochs_in_stage=2,
             alpha=0.0, grad_ratio=0.31, grad_ratio_threshold=0.05, params=1234),
        dict(slot="block2", stage=Stage.DORMANT),
    )
    cmd = {"id": "c1", "command": "cull", "slot": "block1", "reason": "operator says so"}
    specs = [
        (RunStarted, dict(run_id="r1", config={"lr": 0.003, "nested": {"a": [1, 2]}}, task="digits",
                          topology="cnn", slots=["block1", "block2"],
                          isolation={"blend_detach": True, "source": "default"}, device="cpu",
                          versions={"torch": "2.13.0", "esper": "0.1.0"}, planned_epochs=30)),
        (StepMetrics, dict(loss=0.41, lr=3e-3, samples_per_s=8123.5)),
        (EpochCompleted, dict(train_loss=0.41, train_accuracy=88.0, val_loss=0.398, val_accuracy=91.2,
                              epoch_time_s=3.5, samples_per_s=8000.0, slots=slots)),
        (SeedGerminated, dict(slot="block1", seed_id="s1", blueprint="conv_light", params=1234)),
        (StageChanged, dict(slot="block1", seed_id="s1", blueprint="conv_light", from_stage=Stage.TRAINING,
                            to_stage=Stage.BLENDING, cause="gate", reason="G2 passed", gate=passed)),
        (StageChanged, {"slot": "block2", "from": "TRAINING", "to": "BLENDING", "cause": "operator",
                        "forced": True, "reason": "force_advance",
                        "gate": failing.model_copy(update={"forced": True})}),
        (GateEvaluated, dict(slot="block1", **GateEvaluated.fields_from(failing))),
        (WarningEvent, dict(slot="block1", code="ratio_near_threshold", message="ratio 0.055 near 0.05")),
        (ControllerDecision, dict(action="germinate", slot="block2", blueprint="attention", reason="plateau")),
        (AutopilotWaiting, dict(reason="host not stable: val loss -4.1 %/epoch, needs every epoch above -3 %")),
        (CommandReceived, dict(command_id="c1", command=cmd)),
        (CommandApplied, dict(command_id="c1", command=cmd, detail="culled s1")),
        (CommandRejected, dict(command_id="c2", command={"id": "c2", "command": "fossilize", "slot": "x"},
                               reason="unknown slot 'x'")),
        (GovernorRollback, dict(trigger="nan", loss=None, restored_epoch=2, seeds_culled=["s1"])),
        (CheckpointSaved, dict(path="/runs/r1/checkpoint.pt")),
        (RunPaused, dict(cause="operator")),
        (RunResumed, dict(cause="operator")),
        (RanksVerified, dict(in_sync=False, checksums=[{"params": "ab12", "lifecycle": "cd34"},
                                                       {"params": "ab13", "lifecycle": "cd34"}],
                             diverged=[1], trigger="germinate block1 (operator)")),
        (RunFinished, dict(status="completed", final={"val_accuracy": 93.1, "val_loss": None})),
        (RunFailed, dict(error_type="RuntimeError", message="boom", traceback="Traceback ...\nRuntimeError")),
    ]
    return [cls(seq=i, **STAMP, **fields) for i, (cls, fields) in enumerate(specs, 1)]


def test_every_kind_has_a_sample():
    assert {e.kind for e in every_kind()} == set(EVENT_KINDS) == set(EVENT_TYPES)


@pytest.mark.parametrize("event", every_kind(), ids=lambda e: f"{e.seq}-{e.kind}")
def test_round_trip_through_json(event):
    line = event.model_dump_json(by_alias=True)
    assert "\n" not in line  # one event per line, always
    back = EVENT_ADAPTER.validate_json(line)
    assert type(back) is type(event)
    assert back == event
    raw = json.loads(line)
    assert raw["kind"] == event.kind and raw["seq"] == event.seq
    assert {"time", "epoch", "step"} <= raw.keys()


def test_stage_changed_writes_from_and_to_with_stage_names():
    event = next(e for e in every_kind() if e.kind == "stage_changed")
    raw = json.loads(event.model_dump_json(by_alias=True))
    assert raw["from"] == "TRAINING" and raw["to"] == "BLENDING"
    assert "from_stage" not in raw and "to_stage" not in raw
    assert raw["gate"]["gate"] == "G2" and raw["gate"]["target"] == "BLENDING"
    # Dumped without by_alias too: the contract's names win (serialize_by_alias).
    assert json.loads(event.model_dump_json())["from"] == "TRAINING"
    assert event.from_stage is Stage.TRAINING


def test_forced_stage_change_keeps_the_failing_gate_result():
    forced = [e for e in every_kind() if e.kind == "stage_changed" and e.forced][0]
    back = EVENT_ADAPTER.validate_json(forced.model_dump_json(by_alias=True))
    assert back.forced and back.gate is not None and not back.gate.passed and back.gate.forced
    assert "grad_ratio" in {c.name for c in back.gate.failed_checks}


def test_slot_report_stages_serialize_by_name():
    event = next(e for e in every_kind() if e.kind == "epoch_completed")
    raw = json.loads(event.model_dump_json())
    assert [s["stage"] for s in raw["slots"]] == ["TRAINING", "DORMANT"]


def test_gate_evaluated_from_result_keeps_every_check():
    result = g2_result(grad_ratio=0.01)
    event = GateEvaluated.from_result(result, slot="block1", seq=1, **STAMP)
    assert event.gate == "G2" and event.target is Stage.BLENDING and not event.passed
    assert event.checks == result.checks
    assert event.as_result() == result
    raw = json.loads(event.model_dump_json())
    assert {"name": "grad_ratio", "value": 0.01, "threshold": 0.2, "passed": False, "op": ">="} in raw["checks"]


def test_unknown_kind_is_rejected():
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        EVENT_ADAPTER.validate_json('{"kind": "reboot_host", "seq": 1, "time": 0, "epoch": 0, "step": 0}')
    with pytest.raises(ValidationError):
        EVENT_ADAPTER.validate_json('{"seq": 1, "time": 0, "epoch": 0, "step": 0}')


def test_unknown_fields_from_newer_writers_are_ignored():
    line = '{"kind":"checkpoint_saved","seq":4,"time":1,"epoch":1,"step":9,"path":"c.pt","sha256":"ab"}'
    assert EVENT_ADAPTER.validate_json(line) == CheckpointSaved(seq=4, time=1, epoch=1, step=9, path="c.pt")


def test_events_are_frozen():
    event = every_kind()[1]
    with pytest.raises(ValidationError):
        event.loss = 1.0


def test_run_started_carries_the_schema_version():
    assert every_kind()[0].schema_version == SCHEMA_VERSION == 1


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_nonfinite_metrics_become_null_and_the_json_stays_valid(bad):
    step = StepMetrics(seq=1, **STAMP, loss=bad, lr=0.1, samples_per_s=bad)
    assert step.loss is None and step.finite is False and step.samples_per_s is None
    epoch = EpochCompleted(seq=2, **STAMP, train_loss=bad, val_accuracy=bad,
                           slots=[SlotReport(slot="b", stage="BLENDING", grad_ratio=bad, counterfactual=bad)])
    rollback = GovernorRollback(seq=3, **STAMP, trigger="nan", loss=bad, restored_epoch=1)
    finished = RunFinished(seq=4, **STAMP, status="stopped", final={"val_loss": bad})
    gate = GateEvaluated.from_result(g2_result(seed_grad_norm=bad), slot="b", seq=5, **STAMP)
    started = RunStarted(seq=6, **STAMP, run_id="r", config={"x": bad, "y": [bad]}, task="t", topology="cnn",
                         slots=[], isolation={}, device="cpu", planned_epochs=1)
    for event in (step, epoch, rollback, finished, gate, started):
        line = event.model_dump_json(by_alias=True)
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c} in {line}"))
        back = EVENT_ADAPTER.validate_json(line)
        if event is not started:  # free-form dicts keep null, the typed fields read back equal
            assert back == event
    # A non-finite gate measurement keeps its name, so the gate panel can show what was measured.
    (check,) = [c for c in gate.checks if c.name == "seed_grad_not_exploding"]
    assert check.value == repr(bad) and not check.passed


def test_finite_loss_is_flagged_finite():
    assert StepMetrics(seq=1, **STAMP, loss=0.5, lr=0.1).finite
    assert StepMetrics(seq=1, **STAMP, loss=math.nan, lr=0.1, finite=False).finite is False


def test_settings_must_be_finite():
    # lr and alpha are set by the engine, never measured: a non-finite one is a writer bug.
    with pytest.raises(ValidationError):
        StepMetrics(seq=1, **STAMP, loss=0.5, lr=NAN)
    with pytest.raises(ValidationError):
        SlotReport(slot="b", stage="BLENDING", alpha=INF)


def test_stage_changed_cause_is_a_closed_set():
    with pytest.raises(ValidationError):
        StageChanged(seq=1, **STAMP, slot="b", from_stage="DORMANT", to_stage="GERMINATED", cause="whim")


def test_lifecycle_kinds_are_everything_but_the_metrics():
    assert LIFECYCLE_KINDS == set(EVENT_KINDS) - {"step_metrics", "epoch_completed"}


# --- Emitter -------------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        self.now += 0.5
        return self.now


def test_emitter_stamps_seq_time_epoch_step():
    sink = ListSink()
    emitter = Emitter(sink, clock=Clock())
    emitter.epoch, emitter.step = 2, 40
    a = emitter.emit(StepMetrics, loss=0.3, lr=0.1)
    emitter.step = 41
    b = emitter.emit(WarningEvent, code="x", message="y")
    c = emitter.emit(CheckpointSaved, path="p", epoch=9, step=7)  # explicit stamps win
    assert [e.seq for e in sink.events] == [1, 2, 3]
    assert (a.kind, a.epoch, a.step, a.time) == ("step_metrics", 2, 40, 100.5)
    assert (b.epoch, b.step, b.time) == (2, 41, 101.0)
    assert (c.epoch, c.step) == (9, 7)
    assert emitter.seq == 3 and sink.events == [a, b, c]


def test_emitter_continues_numbering_from_start_seq():
    sink = ListSink()
    emitter = Emitter(sink, start_seq=41)
    seqs = [emitter.emit(StepMetrics, loss=0.1, lr=0.1).seq for _ in range(5)]
    assert seqs == [42, 43, 44, 45, 46]


def test_a_rejected_event_leaves_no_gap_in_seq():
    emitter = Emitter(ListSink())
    emitter.emit(CheckpointSaved, path="a")
    with pytest.raises(ValidationError):
        emitter.emit(StepMetrics, loss=0.1, lr=NAN)
    assert emitter.emit(CheckpointSaved, path="b").seq == 2


def test_lifecycle_events_flush_the_sink_and_metrics_do_not():
    sink = ListSink()
    emitter = Emitter(sink)
    for _ in range(10):
        emitter.emit(StepMetrics, loss=0.1, lr=0.1)
    emitter.emit(EpochCompleted, train_loss=0.1)
    assert sink.flushes == 0
    emitter.emit(StageChanged, slot="b", from_stage="DORMANT", to_stage="GERMINATED", cause="autopilot")
    assert sink.flushes == 1
    emitter.emit(WarningEvent, code="c", message="m")
    assert sink.flushes == 2 and sink.fsyncs == 0
    emitter.flush(fsync=True)
    assert sink.fsyncs == 1


def test_fanout_writes_flushes_and_closes_every_sink():
    a, b = ListSink(), ListSink()
    emitter = Emitter(FanOut(a, b))
    emitter.emit(RunPaused)
    emitter.close()
    assert a.kinds() == b.kinds() == ["run_paused"]
    assert a.flushes == b.flushes == 1 and a.closed and b.closed


# --- progress lines ------------------------------------------------------------------------------


def test_progress_printer_lines_for_a_scripted_run():
    out = io.StringIO()
    emitter = Emitter(ProgressPrinter(out))
    emitter.emit(RunStarted, run_id="r1", config={}, task="digits", topology="cnn", slots=["block1", "block2"],
                 isolation={"blend_detach": True, "source": "default"}, device="cpu", planned_epochs=30)
    emitter.emit(StepMetrics, loss=0.5, lr=0.1)  # metrics are not printed
    emitter.epoch = 7
    emitter.emit(
        EpochCompleted, train_loss=0.4123, val_loss=0.398, val_accuracy=91.2,
        slots=[SlotReport(slot="block1", stage="TRAINING", blueprint="conv_light", seed_id="s1", alpha=0.0,
                          grad_ratio=0.31),
               SlotReport(slot="block2", stage="DORMANT")],
    )
    emitter.emit(StageChanged, slot="block1", from_stage="TRAINING", to_stage="BLENDING", cause="gate",
                 gate=g2_result())
    emitter.emit(StageChanged, slot="block2", from_stage="TRAINING", to_stage="BLENDING", cause="operator",
                 forced=True, reason="force_advance")
    emitter.emit(ControllerDecision, action="germinate", slot="block2", blueprint="attention", reason="plateau")
    emitter.emit(CommandApplied, command_id="c1", command={"command": "pause"})
    emitter.emit(CommandRejected, command_id="c2", command={"command": "fossilize", "slot": "block9"},
                 reason="unknown slot block9")
    emitter.emit(GovernorRollback, trigger="nan", loss=None, restored_epoch=6, seeds_culled=["s1"])
    emitter.emit(WarningEvent, slot="block1", code="ratio_near_threshold", message="close to 0.05")
    emitter.epoch = 8
    emitter.emit(EpochCompleted, train_loss=None, val_loss=None, val_accuracy=None,
                 slots=[SlotReport(slot="block1", stage="SHADOWING", seed_id="s1", alpha=1.0, counterfactual=1.5)])
    emitter.emit(CheckpointSaved, path="/home/me/runs/r1/checkpoint.pt")
    emitter.emit(RunFinished, status="completed", final={"val_accuracy": 93.1})
    emitter.emit(RunFailed, error_type="RuntimeError", message="CUDA out of memory")
    # The same words as the dashboard's event log (engine.telemetry.describe), with the epoch lines.
    assert out.getvalue().splitlines() == [
        "run r1 started: task digits, cnn host on cpu, 30 epochs, slots block1, block2; host shielded from "
        "blending seeds (default)",
        "epoch 7/30  train loss 0.412  val loss 0.398  val acc 91.2%  | block1 TRAINING alpha 0.00 r 0.31 | block2 "
        "DORMANT",
        "  block1: TRAINING -> BLENDING (G2 passed)",
        "  block2: TRAINING -> BLENDING (operator FORCED): force_advance",
        "  autopilot: germinate attention in block2 (plateau)",
        "  operator: pause: applied",
        "  operator: fossilize block9: rejected: unknown slot block9",
        "  governor: loss was NaN; rolled back to epoch 6, culled s1",
        "  warning block1: close to 0.05",
        "epoch 8/30  train loss —  val loss —  val acc —  | block1 SHADOWING alpha 1.00 r — cf +1.5",
        "  checkpoint saved (epoch 8)",
        "run completed: val accuracy 93.1%",
        "run failed: RuntimeError: CUDA out of memory",
    ]


def test_progress_printer_without_run_started_omits_the_total():
    out = io.StringIO()
    ProgressPrinter(out).write(EpochCompleted(seq=1, time=0, epoch=3, step=0, train_loss=1.0))
    assert out.getvalue() == "epoch 3  train loss 1.000  val loss —  val acc —\n"


def test_progress_printer_is_plain_text():
    out = io.StringIO()
    printer = ProgressPrinter(out)
    for event in every_kind():
        printer.write(event)
    printer.flush()
    text = out.getvalue()
    assert "\x1b" not in text  # no colour codes
    # No emoji or symbols beyond the dash, the ellipsis and the comparisons the gates' sentences use.
    assert all(ord(ch) < 0x2000 or ch in "—…≤≥" for ch in text)


def test_progress_printer_never_writes_a_control_character():
    """Events reach the printer straight from the engine (not through the log reader), and their strings
    can come from outside (an operator's cull reason, an exception message, a blueprint name): no title
    change, clipboard write or screen clear may reach the batch job's terminal, and no value may pose
    as a progress line of its own."""
    evil = "x\x1b]0;pwned\x07 \x1b]52;c;cHduZWQ=\x07 \x1b[2J \x9b2J \x7f\r\nepoch 99/30  train 0.000"
    out = io.StringIO()
    emitter = Emitter(ProgressPrinter(out))
    emitter.emit(RunStarted, run_id=f"r{evil}", config={}, task=evil, topology="cnn", slots=[evil],
                 isolation={"blend_detach": True, "source": evil}, device=evil, planned_epochs=30)
    emitter.emit(EpochCompleted, train_loss=0.4, slots=[SlotReport(slot=evil, stage="TRAINING", blueprint=evil,
                                                                   seed_id="s1")])
    emitter.emit(StageChanged, slot=evil, from_stage="TRAINING", to_stage="BLENDING", cause="operator", reason=evil)
    emitter.emit(ControllerDecision, action=evil, slot=evil, blueprint=evil, reason=evil)
    emitter.emit(CommandApplied, command_id=evil, command={"command": evil, "slot": evil}, detail=evil)
    emitter.emit(CommandRejected, command_id="c2", command={"command": "cull", "slot": "b", "reason": evil},
                 reason=evil)
    emitter.emit(GovernorRollback, trigger="nan", loss=None, restored_epoch=6, seeds_culled=[evil])
    emitter.emit(WarningEvent, slot=evil, code=evil, message=evil)
    emitter.emit(RunPaused, cause=evil)
    emitter.emit(RunResumed, cause=evil)
    emitter.emit(RunFinished, status=evil, final={evil: 1.0})
    emitter.emit(RunFailed, error_type=evil, message=evil, traceback=evil)
    text = out.getvalue()
    lines = text.splitlines()
    assert len(lines) == 12  # one line per printed event: the embedded newline did not split any
    assert not [ch for ch in text if (ord(ch) < 0x20 and ch != "\n") or 0x7F <= ord(ch) <= 0x9F]
    assert not any(line.startswith("epoch 99") for line in lines)
    assert "\\x1b]0;pwned\\x07" in lines[-1] and "\\x9b2J" in lines[-1]  # shown, escaped, not dropped


def test_emitter_numbering_holds_across_threads():
    sink = ListSink()
    emitter = Emitter(sink)

    def burst():
        for _ in range(300):
            emitter.emit(StepMetrics, loss=0.1, lr=0.1)

    threads = [threading.Thread(target=burst) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e.seq for e in sink.events] == list(range(1, 1201))  # written in the order numbered


def test_telemetry_imports_without_torch_or_the_ui():
    code = "import sys, json, engine.telemetry; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    loaded = {name.split(".")[0] for name in json.loads(out.stdout)}
    assert not loaded & {"torch", "numpy", "textual", "rich", "esper_tui", "themes"}
