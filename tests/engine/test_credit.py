"""Credit estimators (engine.credit) on constructed cases, and the shadow twin against the real
seedless twin run (the ground truth: same command, `--no-autopilot`, same seed)."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from torch import nn

from engine.config import CreditConfig, OptimConfig, quick_config
from engine.credit import CREDIT_METHODS, CreditBook, paired_interval, recalibrated_bn
from engine.decisions import apply_decision
from engine.lifecycle import Stage
from engine.seedbank import SeedBank
from engine.slot import SeedSlot, TransitionRecord
from engine.telemetry import read_events
from engine.trainer import Trainer

# ---------------------------------------------------------------- a host where the answer is known
# Inputs x (N, 2, 1, 1) uniform in [-1, 1]; the label is whether x0·x1 > 0 (XOR: no linear read-out of
# x solves it). The host is a slot followed by a fixed head that reads feature 0: alone, it sees x0
# and guesses at chance. A seed that writes 10·x0·x1 into feature 0 is the only path to the answer.


class XorHost(nn.Module):
    topology = "cnn"

    def __init__(self) -> None:
        super().__init__()
        self.slots = nn.ModuleDict({"s": SeedSlot("s", "cnn", 2, (2, 2, 1, 1))})
        self.norm = nn.BatchNorm2d(2, affine=False)  # statistics the ablation_bn arms re-estimate
        self.head_w = nn.Parameter(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.slots["s"](x)
        self.norm(f)  # tracks running statistics (not on the output path: the head's scale stays fixed)
        return f.flatten(1) @ self.head_w.t()

    def host_parameters(self) -> list[nn.Parameter]:
        return [self.head_w]

    def on_optimizer_step(self) -> None:
        for slot in self.slots.values():
            slot.on_optimizer_step()


class Oracle(nn.Module):
    """Residual seed whose delta makes feature 0 equal to 10·x0·x1 (the answer's sign)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta = torch.zeros_like(x)
        delta[:, 0] = 10.0 * x[:, 0] * x[:, 1] - x[:, 0]
        return x + delta


class Nothing(nn.Module):
    """Residual seed that adds exactly nothing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.0 * x


def _data(n: int = 400, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, 1, 1, generator=gen) * 2 - 1
    y = (x[:, 0, 0, 0] * x[:, 1, 0, 0] > 0).long()
    return [(x[i:i + 100], y[i:i + 100]) for i in range(0, n, 100)]


def _book(method: str, seed_module: nn.Module) -> tuple[CreditBook, SeedSlot]:
    host = XorHost()
    bank = SeedBank(host, OptimConfig(), lambda *a, **k: None)
    slot = host.slots["s"]
    slot.seed, slot.blueprint, slot.seed_id = seed_module, "test", "s#1"
    book = CreditBook(CreditConfig(method=method), host, bank, val_batches=lambda: iter(_data(seed=1)),
                      calibration_batches=lambda: iter(_data(seed=2)), amp=nullcontext(), build_host=XorHost)
    slot.stage = Stage.TRAINING
    # Blending starts: the book forks its twin now (shadow_twin), then the seed is at full strength.
    record = TransitionRecord("s", "s#1", "test", Stage.TRAINING, Stage.BLENDING, "operator", False, "")
    slot.stage = Stage.BLENDING
    book.on_move(slot, record)
    slot.stage = Stage.PROBATIONARY
    slot._set_alpha(1.0)
    return book, slot


def _measure(book: CreditBook, slot: SeedSlot) -> None:
    from engine.objective import evaluate

    main = evaluate(book.host, book.val_batches(), nullcontext()).correct
    book.measure(slot, main)


@pytest.mark.parametrize("method", CREDIT_METHODS)
def test_a_seed_that_does_nothing_gets_no_credit_and_an_interval_around_zero(method):
    book, slot = _book(method, Nothing())
    _measure(book, slot)
    m = slot.metrics
    assert m.credit_method == method
    assert m.counterfactual == pytest.approx(0.0, abs=1e-9)
    assert m.credit_low <= 0.0 <= m.credit_high


@pytest.mark.parametrize("method", CREDIT_METHODS)
def test_a_seed_that_is_the_only_path_to_the_answer_gets_large_credit(method):
    book, slot = _book(method, Oracle())
    _measure(book, slot)
    m = slot.metrics
    # The host alone is at chance (~50 %); with the seed it is (nearly) always right.
    assert m.counterfactual > 35.0
    assert m.credit_low > 25.0 and m.credit_high >= m.counterfactual >= m.credit_low


def test_credit_pools_a_window_of_epochs():
    book, slot = _book("ablation", Oracle())
    for _ in range(book.config.window + 1):
        _measure(book, slot)
    assert len(book.windows[("s", "ablation")]) == book.config.window == 5
    assert len(slot.metrics.counterfactual_history) == 6


def test_compare_logs_every_other_estimator_beside_the_chosen_one():
    book, slot = _book("shadow_twin", Oracle())
    book.config = CreditConfig(method="shadow_twin", compare=True)
    _measure(book, slot)
    assert slot.metrics.credit_method == "shadow_twin"
    assert set(slot.metrics.credit_compare) == {"ablation", "ablation_bn"}


def test_a_seed_without_a_twin_falls_back_to_ablation_bn_and_says_so():
    book, slot = _book("shadow_twin", Oracle())
    book.twins.clear()  # e.g. resumed from a checkpoint that predates twins
    _measure(book, slot)
    assert slot.metrics.credit_method == "ablation_bn"


def test_leaving_trial_drops_the_twin_and_the_window():
    book, slot = _book("shadow_twin", Oracle())
    _measure(book, slot)
    record = TransitionRecord("s", "s#1", "test", Stage.PROBATIONARY, Stage.CULLED, "operator", False, "")
    book.on_move(slot, record)
    assert not book.twins and not book.windows


def test_paired_interval_is_the_mean_in_points_with_a_bracketing_deterministic_interval():
    diff = torch.tensor([1.0] * 30 + [0.0] * 60 + [-1.0] * 10)  # mean 0.2 → +20 points
    mean, low, high = paired_interval(diff, 0.9, 2000)
    assert mean == pytest.approx(20.0)
    assert low < 20.0 < high
    assert (low, high) == paired_interval(diff, 0.9, 2000)[1:]
    # Standard error of the mean is ~6.3 points here: a 90 % interval spans roughly ±10.
    assert 5.0 < high - mean < 16.0 and 5.0 < mean - low < 16.0
    assert paired_interval(torch.zeros(50), 0.9, 100) == (0.0, 0.0, 0.0)


def test_recalibrated_bn_restores_statistics_and_mode():
    bn = nn.BatchNorm1d(3)
    model = nn.Sequential(bn)
    bn.running_mean.fill_(5.0)
    model.eval()
    batches = [(torch.randn(20, 3) + 1.0, None) for _ in range(3)]
    with recalibrated_bn(model, batches):
        assert not model.training
        assert bn.running_mean.sub(1.0).abs().max() < 0.5  # re-estimated from the batches
    assert torch.equal(bn.running_mean, torch.full((3,), 5.0))
    assert bn.momentum == 0.1 and not model.training


# ---------------------------------------------------------------- the oracle: the real seedless twin


@pytest.mark.slow
def test_shadow_twin_credit_equals_the_gain_over_the_real_seedless_twin_run(tmp_path):
    """Ground truth: the same config with the autopilot off is the seedless run. While only one seed
    has blended, the shadow twin *is* that run, so the logged credit (window 1) equals grown minus
    twin accuracy epoch by epoch; the ablation is not held to that (it measures removal damage)."""
    cfg = quick_config(credit=CreditConfig(window=1))
    Trainer(cfg, tmp_path / "grown", serve_commands=False).run()
    Trainer(cfg.model_copy(update={"autopilot": False}), tmp_path / "twin", serve_commands=False).run()
    grown = read_events(tmp_path / "grown" / "events.jsonl", strict=True).events
    twin = {e.epoch: e.val_accuracy for e in read_events(tmp_path / "twin" / "events.jsonl").events
            if e.kind == "epoch_completed"}
    first_blend = next(e for e in grown if e.kind == "stage_changed" and str(e.to_stage) == "BLENDING")
    second_blends = [e.epoch for e in grown if e.kind == "stage_changed" and str(e.to_stage) == "BLENDING"
                     and e.seed_id != first_blend.seed_id]
    until = min(second_blends, default=cfg.epochs + 1)
    compared = 0
    for e in grown:
        if e.kind != "epoch_completed" or e.epoch >= until:
            continue
        for r in e.slots:
            if r.seed_id == first_blend.seed_id and r.counterfactual is not None:
                assert r.credit_method == "shadow_twin"
                assert r.counterfactual == pytest.approx(e.val_accuracy - twin[e.epoch], abs=1e-3)  # float32 means; one example is 0.28
                assert r.credit_low <= r.counterfactual <= r.credit_high
                compared += 1
    assert compared >= 3, "the seed was measured in too few epochs to compare"


# ---------------------------------------------------------------- decisions that wait for evidence


def _trainer_with_seed_in(stage: Stage, tmp_path) -> Trainer:
    trainer = Trainer(quick_config(), tmp_path, serve_commands=False)
    trainer._build()
    assert trainer.bank.germinate("block0", "conv_light", "operator").passed
    while trainer.host.slots["block0"].stage is not stage:
        assert trainer.bank.advance("block0", True, "operator").applied
    return trainer


def apply_timeouts(trainer) -> list:
    """The review's probation culls, applied as the trainer applies them; returns them."""
    decisions = trainer.review.timeouts()
    for decision in decisions:
        assert decision.cause == "timeout" and decision.action == "cull"
        assert apply_decision(trainer.bank, decision).applied
    return decisions


@pytest.mark.parametrize("high,culled", [(0.3, False), (0.0, True), (-0.1, True)])
def test_probation_culls_early_only_when_even_the_upper_bound_is_not_positive(tmp_path, high, culled):
    trainer = _trainer_with_seed_in(Stage.PROBATIONARY, tmp_path)
    slot = trainer.host.slots["block0"]
    slot.metrics.record_credit(-0.5, -1.0, high, "shadow_twin")  # a negative point estimate either way
    apply_timeouts(trainer)
    assert (slot.stage is Stage.CULLED) is culled


def test_probation_timeout_culls_a_seed_whose_lower_bound_never_reached_g5(tmp_path):
    trainer = _trainer_with_seed_in(Stage.PROBATIONARY, tmp_path)
    slot = trainer.host.slots["block0"]
    slot.metrics.record_credit(1.8, 0.6, 3.0, "shadow_twin")  # helps, probably, but not surely >= 1 point
    slot.epochs_in_stage = 4
    apply_timeouts(trainer)
    assert slot.stage is Stage.PROBATIONARY  # before the limit it waits for more evidence
    slot.epochs_in_stage = 5  # the limit: max(5, 10 % of 24 epochs)
    apply_timeouts(trainer)
    assert slot.stage is Stage.CULLED


def test_a_fossilized_architecture_can_be_built_from_the_start(tmp_path):
    """The experiment's `fixed` arm: seeds in place at epoch 0 at full strength, trained as host."""
    cfg = quick_config(epochs=2, autopilot=False, fossils={"block0": "conv_wide"})
    trainer = Trainer(cfg, tmp_path, serve_commands=False)
    assert trainer.run() == 0
    slot = trainer.host.slots["block0"]
    assert slot.stage is Stage.FOSSILIZED and slot.alpha == 1.0
    seed_params = {id(p) for p in slot.seed.parameters()}
    assert seed_params <= {id(p) for p in trainer.bank.host_group["params"]}
    reports = [e for e in read_events(tmp_path / "events.jsonl").events if e.kind == "epoch_completed"]
    assert all(r.slots[0].stage == Stage.FOSSILIZED for r in reports)
    with pytest.raises(ValueError, match="unknown slot"):
        Trainer(cfg.model_copy(update={"fossils": {"nope": "conv_wide"}}), tmp_path / "x", serve_commands=False)._build()


@pytest.mark.slow
def test_g2_refuses_a_seed_whose_gradient_is_weaker_than_any_learning_seeds(tmp_path):
    """A seed whose output path is scaled by 1/100 learns ~100x slower: its measured gradient ratio
    falls below the CNN threshold (set from measurement), while the same seed unscaled passes."""

    class Faint(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 0.01 * (self.inner(x) - x)

    verdicts = {}
    for faint in (False, True):
        cfg = quick_config(epochs=4, autopilot=False)
        trainer = Trainer(cfg, tmp_path / str(faint), serve_commands=False)
        trainer._build()
        assert trainer.bank.germinate("block0", "conv_wide", "operator").passed
        assert trainer.bank.advance("block0", False, "operator").passed  # G1 → TRAINING
        if faint:
            slot = trainer.host.slots["block0"]
            slot.seed = Faint(slot.seed)  # same parameters, same optimizer
        trainer.run()
        gates = [e for e in read_events(tmp_path / str(faint) / "events.jsonl").events
                 if e.kind == "gate_evaluated" and e.gate == "G2"]
        ratio = next(c for c in gates[-1].checks if c.name == "grad_ratio")
        verdicts[faint] = ratio
    assert verdicts[False].passed and verdicts[False].value >= verdicts[False].threshold
    assert not verdicts[True].passed and verdicts[True].value < verdicts[True].threshold


@pytest.mark.slow
def test_on_the_default_task_the_grown_run_beats_its_seedless_twin(tmp_path):
    """The shipped default, seed 3: the autopilot fossilizes a seed and the grown run ends ahead of
    the same run without the autopilot (its exact seedless twin) by well over the epoch-to-epoch noise."""
    from engine.config import default_config

    cfg = default_config(seed=3)
    accs = {}
    for arm, autopilot in (("grown", True), ("twin", False)):
        Trainer(cfg.model_copy(update={"autopilot": autopilot}), tmp_path / arm, serve_commands=False).run()
        events = read_events(tmp_path / arm / "events.jsonl").events
        accs[arm] = [e.val_accuracy for e in events if e.kind == "epoch_completed"]
        if autopilot:
            assert any(e.kind == "stage_changed" and str(e.to_stage) == "FOSSILIZED" for e in events)
    gain = sum(accs["grown"][-5:]) / 5 - sum(accs["twin"][-5:]) / 5
    assert gain > 1.5, f"grown minus twin over the last 5 epochs: {gain:+.2f} points"


@pytest.mark.slow
def test_a_resumed_run_keeps_its_twins_and_logs_the_same_credit(tmp_path):
    """The twin and the credit window travel in the checkpoint: stopping mid-trial (same config, so the
    same planned epochs) and resuming gives exactly the credit the uninterrupted run logged."""
    cfg = quick_config(epochs=16, checkpoint_every=1)
    Trainer(cfg, tmp_path / "whole", serve_commands=False).run()
    whole = [e for e in read_events(tmp_path / "whole" / "events.jsonl").events if e.kind == "epoch_completed"]
    on_trial = [e.epoch for e in whole if any(r.credit_method == "shadow_twin" for r in e.slots)]
    assert len(on_trial) >= 3, "no seed was on trial long enough to stop in the middle"
    stop = on_trial[1]  # a twin exists and the window holds one epoch
    first = Trainer(cfg, tmp_path / "split", serve_commands=False)
    whole_epoch = first._run_epoch

    def epoch_then_stop_at(stop=stop):  # the operator's graceful stop, right after epoch `stop`
        whole_epoch()
        first.control.stop_requested = first.control.stop_requested or first.epoch == stop

    first._run_epoch = epoch_then_stop_at
    first.run()
    assert first.epoch == stop
    assert first.credit.twins, "the run stopped without a twin to save"
    resumed = Trainer(cfg, tmp_path / "split", resume=True, serve_commands=False)
    resumed._build()
    assert set(resumed.credit.twins) == set(first.credit.twins)
    resumed.run()
    split = [e for e in read_events(tmp_path / "split" / "events.jsonl").events if e.kind == "epoch_completed"]

    def credits(reports):
        return [(e.epoch, [(r.slot, r.counterfactual, r.credit_low, r.credit_high, r.credit_method) for r in e.slots])
                for e in reports if e.epoch > stop]

    assert credits(split) == credits(whole)
