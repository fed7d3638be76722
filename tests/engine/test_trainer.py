"""The whole engine in-process on the shipped digits task: a seed's life, the governor, crashes,
determinism and resume, each read back from the run log as a user would."""

from __future__ import annotations

import math

import pytest
import torch

from engine.config import FaultConfig, quick_config
from engine.lifecycle import Stage
from engine.telemetry import read_events
from engine.trainer import Trainer

pytestmark = pytest.mark.slow


def run(config, run_dir, prepare=None, resume=False) -> tuple[int, list]:
    trainer = Trainer(config, run_dir, resume=resume, serve_commands=False)
    if prepare is not None:
        trainer._build()
        prepare(trainer)
    code = trainer.run()
    log = read_events(run_dir / "events.jsonl", strict=True)
    assert not log.problems
    return code, log.events


def kinds(events, kind):
    return [e for e in events if e.kind == kind]


def lifecycle(events):
    """The run's story without clocks: what changed, where, why."""
    out = []
    for e in events:
        if e.kind == "stage_changed":
            out.append((e.epoch, e.slot, e.blueprint, str(e.from_stage), str(e.to_stage), e.cause, e.forced))
        elif e.kind in ("seed_germinated", "controller_decision", "governor_rollback"):
            out.append((e.epoch, e.kind, getattr(e, "slot", None), getattr(e, "action", None)))
    return out


def test_autopilot_grows_a_seed_through_its_whole_life(tmp_path):
    code, events = run(quick_config(), tmp_path)
    assert code == 0
    assert events[0].kind == "run_started" and events[-1].kind == "run_finished"
    assert events[-1].status == "completed"
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs))
    assert len(kinds(events, "epoch_completed")) == quick_config().epochs

    germinated = kinds(events, "seed_germinated")
    assert germinated, "the autopilot never germinated a seed"
    first = germinated[0]
    story = [(str(e.from_stage), str(e.to_stage)) for e in kinds(events, "stage_changed") if e.seed_id == first.seed_id]
    # Every step of the seed's life is logged, in order, ending in a final stage.
    assert story[:3] == [("DORMANT", "GERMINATED"), ("GERMINATED", "TRAINING"), ("TRAINING", "BLENDING")]
    assert story[-1][1] in ("FOSSILIZED", "CULLED", "EMBARGOED", "DORMANT")
    # Each autopilot move has a decision with a reason just before it.
    decisions = kinds(events, "controller_decision")
    assert decisions and all(d.reason for d in decisions)
    # Every gate that moved the seed is in the log with its checks.
    gates = {e.gate for e in kinds(events, "gate_evaluated") if e.slot == first.slot}
    assert {"G0", "G1", "G2", "G3"} <= gates
    # The alpha ramp is visible epoch by epoch and reaches 1 before SHADOWING.
    alphas = [s.alpha for e in kinds(events, "epoch_completed") for s in e.slots
              if s.seed_id == first.seed_id and s.stage is Stage.BLENDING]
    assert alphas[0] < 1.0 and alphas == sorted(alphas)


def test_nan_loss_rolls_back_culls_the_live_seed_and_keeps_the_log(tmp_path):
    config = quick_config(epochs=4, autopilot=False, faults=FaultConfig(nan_loss_at_step=30))

    def with_seed_in_training(trainer):
        assert trainer.bank.germinate("block1", "conv_light", "operator").passed
        assert trainer.bank.advance("block1", False, "operator").passed  # G1 → TRAINING

    code, events = run(config, tmp_path, prepare=with_seed_in_training)
    assert code == 0 and events[-1].kind == "run_finished"
    (rollback,) = kinds(events, "governor_rollback")
    assert rollback.trigger == "nan"
    assert rollback.restored_epoch == 1  # the last healthy epoch (23 steps per epoch; step 30 is in epoch 2)
    assert rollback.seeds_culled == ("block1",)
    culls = [e for e in kinds(events, "stage_changed") if e.to_stage is Stage.CULLED]
    assert [(c.slot, c.cause) for c in culls] == [("block1", "governor")]
    # Nothing lost: every epoch is in the log, and training went on to finite losses.
    assert [e.epoch for e in kinds(events, "epoch_completed")] == [1, 2, 3, 4]
    last = kinds(events, "epoch_completed")[-1]
    assert last.val_loss is not None and math.isfinite(last.val_loss)


def test_a_crash_ends_the_log_with_run_failed_and_a_nonzero_code(tmp_path):
    code, events = run(quick_config(faults=FaultConfig(crash_at_epoch=3)), tmp_path)
    assert code == 1
    failed = events[-1]
    assert failed.kind == "run_failed"
    assert failed.error_type == "RuntimeError" and "crash requested at epoch 3" in failed.message
    assert "Traceback" in failed.traceback
    assert [e.epoch for e in kinds(events, "epoch_completed")] == [1, 2]


def test_same_config_and_seed_give_the_same_lifecycle(tmp_path):
    config = quick_config(epochs=12)
    _, first = run(config, tmp_path / "a")
    _, second = run(config, tmp_path / "b")
    assert lifecycle(first), "nothing happened: the comparison would be vacuous"
    assert lifecycle(first) == lifecycle(second)
    _, other_seed = run(config.model_copy(update={"seed": 7}), tmp_path / "c")
    assert [e.val_loss for e in kinds(other_seed, "epoch_completed")] != [e.val_loss for e in kinds(first, "epoch_completed")]


def test_resume_continues_the_same_log_with_the_same_seeds(tmp_path):
    config = quick_config(epochs=14, checkpoint_every=4)
    first = Trainer(config, tmp_path, serve_commands=False)
    assert first.run() == 0
    at_stop = {sid: (s.stage, s.alpha, s.blueprint) for sid, s in first.host.slots.items()}
    assert any(stage is not Stage.DORMANT for stage, _, _ in at_stop.values()), "no seed to carry over"

    resumed = Trainer(config, tmp_path, resume=True, epochs=17, serve_commands=False)
    resumed._build()
    assert {sid: (s.stage, s.alpha, s.blueprint) for sid, s in resumed.host.slots.items()} == at_stop
    assert resumed.run() == 0
    events = read_events(tmp_path / "events.jsonl", strict=True).events
    starts = kinds(events, "run_started")
    assert [s.resumed for s in starts] == [False, True]
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs)), "seq must keep increasing across the resume"
    assert [e.epoch for e in kinds(events, "epoch_completed")] == list(range(1, 18))
    # Optimizer state came back too (Adam's step count continues rather than restarts).
    steps = [float(s["step"]) for s in resumed.bank.state_dict()["host_opt"]["state"].values()]
    assert steps and max(steps) == 17 * resumed.steps_per_epoch


def test_gradient_ratio_measurement_never_syncs_per_step(tmp_path, monkeypatch):
    """The hot path reads back from the device once per `sync_every` steps, not per step."""
    calls = {"n": 0}
    original = torch.Tensor.tolist

    def counting(self):
        calls["n"] += 1
        return original(self)

    trainer = Trainer(quick_config(epochs=1, autopilot=False, sync_every=10), tmp_path, serve_commands=False)
    trainer._build()
    trainer.bank.germinate("block1", "depthwise", "operator")
    trainer.bank.advance("block1", False, "operator")
    monkeypatch.setattr(torch.Tensor, "tolist", counting)
    trainer._train_epoch()
    steps = trainer.steps_per_epoch
    assert calls["n"] == math.ceil(steps / 10)
    assert trainer.host.slots["block1"].metrics.grad_ratio.count >= 2


class Operator:
    """Stands in for the control socket: each (when, command) is handed over at the first safe point
    where `when(trainer)` holds, in order, as an operator watching the run would send them."""

    def __init__(self, trainer, script) -> None:
        self.trainer, self.script = trainer, list(script)

    def has_pending(self) -> bool:
        return bool(self.script) and self.script[0][0](self.trainer)

    def drain(self) -> list:
        return [self.script.pop(0)[1]] if self.has_pending() else []

    def wait_for_command(self, timeout: float) -> bool:
        return self.has_pending()

    def close(self) -> None:
        pass


@pytest.mark.parametrize("pause_where", ["between epochs", "mid-epoch"])
def test_step_epoch_trains_exactly_one_epoch_then_pauses(tmp_path, pause_where):
    from engine.commands import new_command

    # Paced: most of an epoch's wall time is the wait after it, where an operator's pause lands.
    config = quick_config(epochs=10, autopilot=False, min_epoch_seconds=0.5)
    trainer = Trainer(config, tmp_path, serve_commands=False)
    trainer._build()
    if pause_where == "between epochs":
        pause_when = lambda t: t.epoch == 2 and not t._in_epoch  # noqa: E731
    else:
        pause_when = lambda t: t.step == 2 * t.steps_per_epoch + 5  # noqa: E731
    paused = lambda t: t.control.paused  # noqa: E731
    trainer.control.server = Operator(trainer, [
        (pause_when, new_command("pause")),
        (paused, new_command("step_epoch")),
        (paused, new_command("step_epoch")),
        (paused, new_command("stop")),
    ])
    assert trainer.run() == 0
    events = read_events(tmp_path / "events.jsonl", strict=True).events
    marks = [(e.kind, getattr(e, "cause", None)) for e in events if e.kind in ("run_paused", "run_resumed", "epoch_completed")]
    first_pause = marks.index(("run_paused", "operator"))
    after = [kind if kind == "epoch_completed" else f"{kind}:{cause}" for kind, cause in marks[first_pause:]]
    # Each press: resumed, one epoch completes (the one in progress, when paused inside it), paused.
    assert after == ["run_paused:operator",
                     "run_resumed:step_epoch", "epoch_completed", "run_paused:step_epoch",
                     "run_resumed:step_epoch", "epoch_completed", "run_paused:step_epoch"]
    assert events[-1].kind == "run_finished" and events[-1].status == "stopped"


def test_the_autopilot_says_what_it_waits_for_when_that_changes(tmp_path):
    code, events = run(quick_config(epochs=8), tmp_path)
    assert code == 0
    said = [e.reason for e in events if e.kind == "autopilot_waiting"]
    assert said[0] == "lets the host train alone until epoch 2 (now 1)"
    assert all(a != b for a, b in zip(said, said[1:])), "repeated every epoch instead of on change"
    assert None in said, "it germinated, so at some point it was not waiting"
    assert len(said) < 2 * 8
