"""Lifecycle behaviour through `SeedSlot` (SPEC §2, §3): gates on every edge, forced moves, illegal
edges, the alpha ramp, culling and embargo, and per-seed metrics.

The slots here stand alone (no host): a CNN slot of 8 channels with a (2, 8, 4, 4) probe, and a
Transformer slot of 16 features. Metrics are fed honestly through `SeedMetrics` so that the gates
really pass (or really fail) rather than being forced.
"""

from __future__ import annotations

import math

import pytest
import torch

from engine.alpha import CURVES, alpha_at
from engine.config import LifecycleConfig
from engine.gates import GateResult, GateThresholds
from engine.lifecycle import LIVE_STAGES, Stage
from engine.slot import SeedSlot, TransitionRecord

HAPPY = [
    Stage.DORMANT,
    Stage.GERMINATED,
    Stage.TRAINING,
    Stage.BLENDING,
    Stage.SHADOWING,
    Stage.PROBATIONARY,
    Stage.FOSSILIZED,
]
LIVE = [Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING, Stage.SHADOWING, Stage.PROBATIONARY]


@pytest.fixture(autouse=True)
def _keep_global_rng():
    """These tests seed torch's global RNG (seeds are built from it); leave no trace for other files."""
    with torch.random.fork_rng(devices=[]):
        yield


def make_slot(topology: str = "cnn", **cfg) -> SeedSlot:
    torch.manual_seed(0)
    if topology == "cnn":
        return SeedSlot("s1", "cnn", 8, (2, 8, 4, 4), LifecycleConfig(**cfg))
    return SeedSlot("s1", "transformer", 16, (2, 5, 16), LifecycleConfig(**cfg))


def failed(result: GateResult) -> set[str]:
    return {c.name for c in result.failed_checks}


def feed_gradients(slot: SeedSlot, ratio: float = 1.0) -> None:
    """One gradient measurement giving exactly `ratio` (n_seed = n_host = 1, host norm 1)."""
    slot.metrics.record_gradients(ratio * ratio, 1, 1.0, 1)


def epochs(slot: SeedSlot, n: int) -> None:
    for _ in range(n):
        slot.end_epoch()


def force_to(slot: SeedSlot, stage: Stage, blueprint: str = "norm") -> None:
    """Germinate (if needed) and force along the happy path to `stage`."""
    if slot.stage is Stage.DORMANT and stage is not Stage.DORMANT:
        assert slot.germinate(blueprint).passed
    while slot.stage is not stage:
        assert slot.advance(force=True).applied
    slot.take_transitions()


# --------------------------------------------------------------------------------------------------
# happy path with honest metrics
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_happy_path_with_honest_metrics(topology):
    slot = make_slot(topology, blend_steps=4)
    assert slot.stage is Stage.DORMANT and slot.seed is None and slot.alpha == 0.0
    records: list[TransitionRecord] = []
    gates: list[GateResult] = []

    r = slot.germinate("norm")
    assert (r.gate, r.target, r.passed, r.forced, r.applied) == ("G0", Stage.GERMINATED, True, False, True)
    assert all(c.passed for c in r.checks)
    assert {"slot_exists", "slot_dormant", "blueprint_registered", "shape_preserved", "param_budget"} <= {
        c.name for c in r.checks
    }
    assert slot.seed is not None and slot.blueprint == "norm" and slot.seed_id == "s1#1"
    gates.append(r)
    records += slot.take_transitions()

    r = slot.advance()  # G1: built, on device/dtype, finite probe
    assert (r.gate, r.target, r.passed) == ("G1", Stage.TRAINING, True)
    assert slot.stage is Stage.TRAINING
    gates.append(r)
    records += slot.take_transitions()

    epochs(slot, 3)
    feed_gradients(slot, 1.0)
    slot.metrics.val_loss = 1.0  # the pre-blend level G4 compares against
    slot.metrics.val_accuracy = 50.0
    r = slot.advance()
    assert (r.gate, r.target, r.passed) == ("G2", Stage.BLENDING, True), r.reason
    assert r.warnings == ()
    assert slot.stage is Stage.BLENDING and slot.alpha == 0.0
    assert slot.metrics.val_loss_pre_blend == 1.0
    assert slot.blend_progress == (0, 4)
    gates.append(r)
    records += slot.take_transitions()

    for _ in range(4):
        slot.on_optimizer_step()
    assert slot.alpha == 1.0
    epochs(slot, 3)
    r = slot.advance()
    assert (r.gate, r.target, r.passed) == ("G3", Stage.SHADOWING, True), r.reason
    assert slot.stage is Stage.SHADOWING
    gates.append(r)
    records += slot.take_transitions()

    epochs(slot, 2)
    slot.metrics.val_loss = 0.9
    slot.metrics.record_credit(2.0, 1.2, 2.8, "shadow_twin")
    r = slot.advance()
    assert (r.gate, r.target, r.passed) == ("G4", Stage.PROBATIONARY, True), r.reason
    gates.append(r)
    records += slot.take_transitions()

    epochs(slot, 3)  # G5 waits for evidence: at least g5_min_epochs in PROBATIONARY
    r = slot.advance()
    assert (r.gate, r.target, r.passed) == ("G5", Stage.FOSSILIZED, True), r.reason
    assert slot.stage is Stage.FOSSILIZED and slot.alpha == 1.0 and slot.seed is not None
    assert not slot.is_live
    gates.append(r)
    records += slot.take_transitions()

    assert [(rec.source, rec.target) for rec in records] == list(zip(HAPPY, HAPPY[1:]))
    for rec, gate in zip(records, gates):
        assert rec.cause == "operator"
        assert rec.forced is False
        assert rec.slot_id == "s1" and rec.seed_id == "s1#1" and rec.blueprint == "norm"
        assert rec.gate == gate
        assert rec.gate.passed
    assert slot.take_transitions() == []  # drained


def test_transition_records_carry_the_cause():
    slot = make_slot()
    slot.germinate("norm", cause="autopilot")
    slot.advance(cause="autopilot")
    slot.cull("no good", cause="governor")
    recs = slot.take_transitions()
    assert [r.cause for r in recs] == ["autopilot", "autopilot", "governor"]
    assert recs[-1].target is Stage.CULLED and recs[-1].reason == "no good" and recs[-1].gate is None
    recs = slot.end_epoch()
    assert [(r.source, r.target, r.cause) for r in recs] == [(Stage.CULLED, Stage.EMBARGOED, "embargo")]


# --------------------------------------------------------------------------------------------------
# failing gates, forcing, illegal edges
# --------------------------------------------------------------------------------------------------


def test_g2_without_gradient_measurements_fails_host_gradients_absent():
    slot = make_slot()
    force_to(slot, Stage.TRAINING)
    epochs(slot, 3)
    r = slot.advance()
    assert (r.gate, r.passed, r.forced, r.applied) == ("G2", False, False, False)
    assert "host_gradients_absent" in failed(r)
    check = next(c for c in r.checks if c.name == "host_gradients_absent")
    assert check.value is None
    assert slot.stage is Stage.TRAINING and slot.take_transitions() == []


def test_g2_with_zero_host_gradient_stays_unmeasurable():
    slot = make_slot()
    force_to(slot, Stage.TRAINING)
    epochs(slot, 3)
    assert slot.metrics.record_gradients(1.0, 10, 0.0, 100) is None
    r = slot.advance()
    assert "host_gradients_absent" in failed(r)
    assert slot.stage is Stage.TRAINING


def test_g2_with_too_few_epochs_fails_epochs_in_stage():
    slot = make_slot()
    force_to(slot, Stage.TRAINING)
    feed_gradients(slot, 1.0)
    for done in range(3):
        r = slot.advance()
        assert failed(r) == {"epochs_in_stage"}, (done, r.reason)
        check = next(c for c in r.checks if c.name == "epochs_in_stage")
        assert (check.value, check.threshold) == (done, 3)
        assert slot.stage is Stage.TRAINING
        slot.end_epoch()
    assert slot.advance().passed
    assert slot.stage is Stage.BLENDING


def test_g2_low_ratio_fails_grad_ratio():
    slot = make_slot()
    force_to(slot, Stage.TRAINING)
    epochs(slot, 3)
    feed_gradients(slot, 0.01)
    r = slot.advance()
    assert failed(r) == {"grad_ratio"}
    assert r.warnings == ()
    assert slot.stage is Stage.TRAINING


def test_failing_gates_later_on_the_path_leave_stage_unchanged():
    slot = make_slot(blend_steps=10)
    force_to(slot, Stage.BLENDING)
    epochs(slot, 3)
    r = slot.advance()  # alpha still 0
    assert r.gate == "G3" and failed(r) == {"alpha"}
    assert slot.stage is Stage.BLENDING
    force_to(slot, Stage.SHADOWING)
    r = slot.advance()  # nothing measured, no epochs
    assert r.gate == "G4"
    assert {"epochs_in_stage", "val_loss_vs_pre_blend", "counterfactual"} <= failed(r)
    assert slot.stage is Stage.SHADOWING
    force_to(slot, Stage.PROBATIONARY)
    epochs(slot, 3)
    slot.metrics.record_credit(1.5, 0.5, 2.5, "shadow_twin")  # the lower bound 0.5 < 1.0
    r = slot.advance()
    assert r.gate == "G5" and failed(r) == {"credit_low"}
    assert slot.stage is Stage.PROBATIONARY
    r = slot.fossilize()
    assert r.gate == "G5" and not r.passed and slot.stage is Stage.PROBATIONARY


def test_force_past_failing_gate_moves_and_records():
    slot = make_slot()
    force_to(slot, Stage.TRAINING)
    r = slot.advance(force=True)
    assert slot.stage is Stage.BLENDING
    assert r.forced is True and r.passed is False and r.applied is True
    assert r.gate == "G2" and {"host_gradients_absent", "epochs_in_stage"} <= failed(r)
    (rec,) = slot.take_transitions()
    assert (rec.source, rec.target, rec.forced) == (Stage.TRAINING, Stage.BLENDING, True)
    assert rec.gate is not None and rec.gate.gate == "G2" and not rec.gate.passed and rec.gate.forced
    assert {"host_gradients_absent", "epochs_in_stage"} <= failed(rec.gate)
    assert "forced" in rec.reason


def test_force_with_passing_gate_is_not_recorded_as_forced():
    slot = make_slot()
    assert slot.germinate("norm").passed
    r = slot.advance(force=True)  # G1 passes on its own
    assert r.passed and not r.forced
    (_, rec) = slot.take_transitions()
    assert rec.forced is False


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("stage", [Stage.DORMANT, Stage.FOSSILIZED, Stage.CULLED, Stage.EMBARGOED])
def test_force_never_makes_an_illegal_edge_legal(stage, force):
    slot = make_slot()
    if stage is Stage.FOSSILIZED:
        force_to(slot, Stage.FOSSILIZED)
    elif stage in (Stage.CULLED, Stage.EMBARGOED):
        force_to(slot, Stage.TRAINING)
        slot.cull("test")
        if stage is Stage.EMBARGOED:
            slot.end_epoch()
        slot.take_transitions()
    assert slot.stage is stage
    seed = slot.seed
    r = slot.advance(force=force)
    assert r.passed is False and r.gate is None and r.forced is False and r.applied is False
    assert r.failed_checks and r.failed_checks[0].name == "legal_transition"
    assert r.reason
    assert slot.stage is stage and slot.seed is seed
    assert slot.take_transitions() == []


def test_fossilize_refused_outside_probationary():
    slot = make_slot()
    force_to(slot, Stage.SHADOWING)
    r = slot.fossilize(force=True)
    assert r.passed is False and r.gate is None
    assert slot.stage is Stage.SHADOWING
    force_to(slot, Stage.PROBATIONARY)
    r = slot.fossilize(force=True)
    assert r.forced and slot.stage is Stage.FOSSILIZED


# --------------------------------------------------------------------------------------------------
# alpha
# --------------------------------------------------------------------------------------------------


def test_alpha_is_zero_on_entering_blending_by_any_route():
    # honest gate route
    slot = make_slot(blend_steps=10)
    force_to(slot, Stage.TRAINING)
    epochs(slot, 3)
    feed_gradients(slot)
    assert slot.advance().passed
    assert slot.alpha == 0.0 and float(slot.alpha_t) == 0.0
    # forced route (the original jumped to 1 here)
    slot = make_slot(blend_steps=10)
    force_to(slot, Stage.TRAINING)
    r = slot.advance(force=True, cause="operator")
    assert r.forced and slot.stage is Stage.BLENDING
    assert slot.alpha == 0.0 and float(slot.alpha_t) == 0.0
    # a second seed entering BLENDING after a first was culled mid-ramp starts at 0 again
    for _ in range(5):
        slot.on_optimizer_step()
    assert slot.alpha > 0
    slot.cull("retry")
    epochs(slot, 1 + slot.config.embargo_epochs)
    assert slot.stage is Stage.DORMANT
    force_to(slot, Stage.BLENDING)
    assert slot.alpha == 0.0 and float(slot.alpha_t) == 0.0 and slot.blend_progress == (0, 10)


@pytest.mark.parametrize("curve", CURVES)
def test_alpha_ramp_follows_curve_over_blend_steps(curve):
    slot = make_slot(blend_steps=10, alpha_curve=curve)
    force_to(slot, Stage.BLENDING)
    temperature = slot.config.alpha_temperature
    seen = [slot.alpha]
    for k in range(1, 11):
        slot.on_optimizer_step()
        assert slot.alpha == pytest.approx(alpha_at(k / 10, curve, temperature), abs=1e-12), k
        assert float(slot.alpha_t) == pytest.approx(slot.alpha, abs=1e-6)
        assert slot.blend_progress == (k, 10)
        seen.append(slot.alpha)
    assert seen[-1] == 1.0 and float(slot.alpha_t) == 1.0  # exactly
    assert seen[0] == 0.0
    assert all(b >= a for a, b in zip(seen, seen[1:])), f"not monotone: {seen}"
    assert len(set(seen)) > 2  # it actually ramps
    for _ in range(5):  # extra steps do not overshoot
        slot.on_optimizer_step()
        assert slot.alpha == 1.0 and float(slot.alpha_t) == 1.0


def test_linear_alpha_values():
    slot = make_slot(blend_steps=10, alpha_curve="linear")
    force_to(slot, Stage.BLENDING)
    for k in range(1, 11):
        slot.on_optimizer_step()
        assert slot.alpha == pytest.approx(k / 10)
    assert slot.alpha == 1.0


def test_blend_steps_default_from_epochs_and_steps_per_epoch():
    slot = make_slot(blend_epochs=2.0)
    slot.steps_per_epoch = 7
    force_to(slot, Stage.BLENDING)
    assert slot.blend_progress == (0, 14)
    for _ in range(14):
        slot.on_optimizer_step()
    assert slot.alpha == 1.0


@pytest.mark.parametrize("stage", [Stage.DORMANT, Stage.GERMINATED, Stage.TRAINING, Stage.SHADOWING])
def test_optimizer_steps_outside_blending_do_not_move_alpha(stage):
    slot = make_slot(blend_steps=10)
    force_to(slot, stage)
    before = slot.alpha
    for _ in range(3):
        slot.on_optimizer_step()
    assert slot.alpha == before and float(slot.alpha_t) == before
    assert slot.blend_progress is None


def test_alpha_is_one_in_shadowing_even_if_forced_early():
    slot = make_slot(blend_steps=100)
    force_to(slot, Stage.BLENDING)
    slot.on_optimizer_step()
    assert 0 < slot.alpha < 0.01
    r = slot.advance(force=True)
    assert r.forced and "alpha" in failed(r)
    assert slot.stage is Stage.SHADOWING
    assert slot.alpha == 1.0 and float(slot.alpha_t) == 1.0
    for stage in (Stage.PROBATIONARY, Stage.FOSSILIZED):
        slot.advance(force=True)
        assert slot.stage is stage and slot.alpha == 1.0 and float(slot.alpha_t) == 1.0


# --------------------------------------------------------------------------------------------------
# cull, embargo, germinate refusals
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", LIVE)
def test_cull_from_each_live_stage_then_embargo_then_dormant(stage):
    assert set(LIVE) == set(LIVE_STAGES)
    slot = make_slot(blend_steps=4)
    force_to(slot, stage)
    if stage is Stage.BLENDING:
        slot.on_optimizer_step()
        assert slot.alpha > 0
    seed_id = slot.seed_id
    check = slot.cull("hurts accuracy")
    assert check.allowed and check.target is Stage.CULLED
    assert slot.stage is Stage.CULLED
    assert slot.seed is None and slot.seed_parameters() == []
    assert slot.alpha == 0.0 and float(slot.alpha_t) == 0.0
    assert not slot.is_live
    (rec,) = slot.take_transitions()
    assert (rec.source, rec.target, rec.reason, rec.forced, rec.seed_id) == (
        stage,
        Stage.CULLED,
        "hurts accuracy",
        False,
        seed_id,
    )

    # germinate refused while CULLED
    r = slot.germinate("norm")
    assert not r.passed and "slot_dormant" in failed(r)

    recs = slot.end_epoch()
    assert slot.stage is Stage.EMBARGOED
    assert [(x.source, x.target) for x in recs] == [(Stage.CULLED, Stage.EMBARGOED)]
    n = slot.config.embargo_epochs
    assert n == 5
    for i in range(n - 1):
        assert slot.end_epoch() == []
        assert slot.stage is Stage.EMBARGOED, f"released after {i + 1} of {n} embargo epochs"
        r = slot.germinate("norm")
        assert not r.passed and "slot_dormant" in failed(r)
        assert slot.stage is Stage.EMBARGOED and slot.seed is None
    recs = slot.end_epoch()
    assert slot.stage is Stage.DORMANT
    assert [(x.source, x.target, x.cause) for x in recs] == [(Stage.EMBARGOED, Stage.DORMANT, "embargo")]
    assert slot.blueprint is None and slot.seed_id is None
    slot.take_transitions()

    # free again: a new seed with a new id
    assert slot.germinate("norm").passed
    assert slot.seed_id == "s1#2"


def test_zero_embargo_releases_at_the_first_epoch_end():
    slot = make_slot(embargo_epochs=0)
    force_to(slot, Stage.TRAINING)
    slot.cull("x")
    recs = slot.end_epoch()
    assert [(r.source, r.target) for r in recs] == [
        (Stage.CULLED, Stage.EMBARGOED),
        (Stage.EMBARGOED, Stage.DORMANT),
    ]
    assert slot.stage is Stage.DORMANT


@pytest.mark.parametrize("stage", [Stage.DORMANT, Stage.FOSSILIZED, Stage.CULLED, Stage.EMBARGOED])
def test_cull_refused_without_a_live_seed(stage):
    slot = make_slot()
    if stage is Stage.FOSSILIZED:
        force_to(slot, Stage.FOSSILIZED)
    elif stage in (Stage.CULLED, Stage.EMBARGOED):
        force_to(slot, Stage.GERMINATED)
        slot.cull("first")
        if stage is Stage.EMBARGOED:
            slot.end_epoch()
        slot.take_transitions()
    seed = slot.seed
    check = slot.cull("again")
    assert check.allowed is False
    assert check.reason and "illegal transition" in check.reason
    if stage is Stage.FOSSILIZED:
        assert "terminal" in check.reason
        assert slot.seed is seed and slot.alpha == 1.0
    assert slot.stage is stage
    assert slot.take_transitions() == []


def test_germinate_unknown_blueprint_is_refused_without_exception():
    slot = make_slot()
    r = slot.germinate("no_such_blueprint")
    assert r.passed is False and r.gate == "G0"
    assert "blueprint_registered" in failed(r)
    assert slot.stage is Stage.DORMANT and slot.seed is None and slot.blueprint is None
    assert slot.seed_id is None and slot.seeds_created == 0
    assert slot.take_transitions() == []
    # a transformer-only blueprint is unknown to a CNN slot
    r = slot.germinate("lora")
    assert "blueprint_registered" in failed(r) and slot.stage is Stage.DORMANT


def test_germinate_into_occupied_slot_is_refused():
    slot = make_slot()
    assert slot.germinate("norm").passed
    seed = slot.seed
    r = slot.germinate("attention")
    assert not r.passed and "slot_dormant" in failed(r)
    assert slot.seed is seed and slot.blueprint == "norm"


def test_new_seed_resets_metrics():
    slot = make_slot(embargo_epochs=0)
    force_to(slot, Stage.TRAINING)
    for _ in range(4):
        feed_gradients(slot, 0.5)
    slot.metrics.record_credit(5.0, 4.0, 6.0, "ablation")
    old = slot.metrics
    assert old.grad_ratio.count == 4 and old.grad_ratio.value == pytest.approx(0.5)
    slot.cull("reset")
    slot.end_epoch()
    assert slot.stage is Stage.DORMANT
    assert slot.germinate("attention").passed
    m = slot.metrics
    assert m is not old
    assert m.grad_ratio.count == 0 and m.grad_ratio.value is None
    assert m.counterfactual is None and m.counterfactual_history == []
    assert m.val_loss is None and m.seed_grad_norm is None


def test_grad_ratio_ema_is_bias_corrected():
    slot = make_slot()
    force_to(slot, Stage.TRAINING)
    assert slot.metrics.record_gradients(0.04, 1, 1.0, 1) == pytest.approx(0.2)  # first sample exactly
    assert slot.gate_inputs().grad_ratio == pytest.approx(0.2)


# --------------------------------------------------------------------------------------------------
# G2 near-threshold warning
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ratio", "passes", "warns"),
    [
        (0.19, False, False),  # below the CNN threshold (0.2)
        (0.2, True, True),  # exactly at it
        (0.22, True, True),  # within 20 % above
        (0.2399, True, True),
        (0.26, True, False),  # more than 20 % above
        (1.0, True, False),
    ],
)
def test_g2_near_threshold_warning(ratio, passes, warns):
    slot = make_slot()
    force_to(slot, Stage.TRAINING)
    epochs(slot, 3)
    feed_gradients(slot, ratio)
    assert slot.metrics.grad_ratio.value == pytest.approx(ratio)
    r = slot.advance()
    assert r.passed is passes, r.reason
    codes = [w.code for w in r.warnings]
    if warns:
        assert codes == ["ratio_near_threshold"]
        assert "s1" in r.warnings[0].message
    else:
        assert codes == []
    assert slot.stage is (Stage.BLENDING if passes else Stage.TRAINING)


def test_g2_threshold_per_blueprint_override():
    gates = GateThresholds(ratio_threshold_per_blueprint={"cnn/norm": 0.5})
    slot = make_slot(gates=gates)
    force_to(slot, Stage.TRAINING, blueprint="norm")
    epochs(slot, 3)
    feed_gradients(slot, 0.3)
    r = slot.advance()
    assert failed(r) == {"grad_ratio"}
    check = next(c for c in r.checks if c.name == "grad_ratio")
    assert check.threshold == 0.5 and check.value == pytest.approx(0.3)


# --------------------------------------------------------------------------------------------------
# gate inputs and G1
# --------------------------------------------------------------------------------------------------


def test_g1_inputs_reflect_the_built_seed():
    slot = make_slot()
    assert slot.germinate("conv_light").passed
    gi = slot.gate_inputs()
    assert gi.stage is Stage.GERMINATED and gi.seed_built and gi.on_host_device and gi.on_host_dtype
    assert gi.probe_finite


def test_g1_fails_for_a_seed_with_non_finite_output():
    slot = make_slot()
    assert slot.germinate("norm").passed
    with torch.no_grad():
        slot.seed.scale.fill_(math.nan)
    r = slot.advance()
    assert r.gate == "G1" and failed(r) == {"probe_output_finite"}
    assert slot.stage is Stage.GERMINATED


def test_g1_fails_for_a_seed_on_the_wrong_dtype():
    slot = make_slot()
    assert slot.germinate("norm").passed
    slot.seed.to(torch.float64)
    r = slot.advance()
    assert not r.passed and "on_host_dtype" in failed(r)
    assert slot.stage is Stage.GERMINATED


def test_seed_parameter_count_and_probe_shape_check():
    slot = make_slot("transformer")
    r = slot.germinate("lora")
    assert r.passed
    shape = next(c for c in r.checks if c.name == "shape_preserved")
    assert shape.value == shape.threshold == "2x5x16"
    budget = next(c for c in r.checks if c.name == "param_budget")
    assert budget.value == slot.seed_param_count() == 2 * 16 * 8
