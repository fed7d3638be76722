"""G0–G5 as pure functions: each check's value, threshold and verdict (SPEC §3)."""

import pytest

from engine.gates import GateCheck, GateInputs, GateThresholds, evaluate, refused
from engine.lifecycle import Stage

T = GateThresholds()


def inputs(stage: Stage, **kw) -> GateInputs:
    return GateInputs(slot_id="s", topology=kw.pop("topology", "cnn"), stage=stage, **kw)


def check(result, name):
    (c,) = [c for c in result.checks if c.name == name]
    return c


G0_OK = dict(blueprint="norm", blueprint_registered=True, probe_shape_in=(2, 8, 4, 4),
             probe_shape_out=(2, 8, 4, 4), seed_params=24, param_budget=100)


def test_g0_passes_for_a_fitting_registered_seed():
    r = evaluate("G0", inputs(Stage.DORMANT, **G0_OK))
    assert r.passed and r.gate == "G0" and r.target is Stage.GERMINATED
    assert {c.name for c in r.checks} == {"slot_exists", "slot_dormant", "blueprint_registered", "shape_preserved", "param_budget"}


@pytest.mark.parametrize(
    "change,failing",
    [
        (dict(stage=Stage.TRAINING), "slot_dormant"),
        (dict(stage=Stage.EMBARGOED, embargoed=True), "slot_dormant"),
        (dict(blueprint_registered=False), "blueprint_registered"),
        (dict(probe_shape_out=(2, 8, 2, 2)), "shape_preserved"),
        (dict(probe_shape_out=None), "shape_preserved"),
        (dict(seed_params=101), "param_budget"),
        (dict(slot_exists=False), "slot_exists"),
    ],
)
def test_g0_does_real_work(change, failing):
    kw = {**G0_OK, **change}
    stage = kw.pop("stage", Stage.DORMANT)
    r = evaluate("G0", inputs(stage, **kw))
    assert not r.passed
    assert [c.name for c in r.failed_checks] == [failing]
    assert r.failed_checks[0].sentence in r.reason and r.reason.startswith("G0 failed: needs ")


def test_g1_checks_device_dtype_and_finite_probe():
    ok = dict(seed_built=True, on_host_device=True, on_host_dtype=True, probe_finite=True)
    assert evaluate("G1", inputs(Stage.GERMINATED, **ok)).passed
    for key in ok:
        r = evaluate("G1", inputs(Stage.GERMINATED, **{**ok, key: False}))
        assert not r.passed and not check(r, {"seed_built": "seed_built", "on_host_device": "on_host_device",
                                               "on_host_dtype": "on_host_dtype", "probe_finite": "probe_output_finite"}[key]).passed


G2_OK = dict(epochs_in_stage=3, grad_ratio=0.5, grad_ratio_mean=0.4, seed_grad_norm=1.0)


def test_g2_passes_and_reports_value_against_threshold():
    r = evaluate("G2", inputs(Stage.TRAINING, **G2_OK))
    assert r.passed and r.target is Stage.BLENDING
    c = check(r, "grad_ratio")
    assert (c.value, c.threshold, c.passed) == (0.5, 0.2, True)
    assert r.warnings == ()


def test_g2_needs_three_epochs():
    r = evaluate("G2", inputs(Stage.TRAINING, **{**G2_OK, "epochs_in_stage": 2}))
    assert not r.passed and check(r, "epochs_in_stage").threshold == 3


def test_g2_unmeasurable_ratio_is_an_explicit_failure():
    r = evaluate("G2", inputs(Stage.TRAINING, **{**G2_OK, "grad_ratio": None}))
    assert not r.passed
    c = check(r, "host_gradients_absent")
    assert c.value is None and not c.passed
    assert "needs gradient ratio measured (not measured yet)" in r.reason


def test_g2_low_ratio_fails_and_exploding_or_nonfinite_fails():
    assert not evaluate("G2", inputs(Stage.TRAINING, **{**G2_OK, "grad_ratio": 0.01})).passed
    r = evaluate("G2", inputs(Stage.TRAINING, **{**G2_OK, "seed_grad_norm": 1e6}))
    assert not check(r, "seed_grad_not_exploding").passed
    r = evaluate("G2", inputs(Stage.TRAINING, **{**G2_OK, "seed_grad_finite": False}))
    assert not check(r, "seed_grad_finite").passed


def test_g2_threshold_per_topology_and_per_blueprint():
    t = GateThresholds(ratio_threshold={"cnn": 0.05, "transformer": 0.2},
                       ratio_threshold_per_blueprint={"cnn/norm": 0.6})
    r = evaluate("G2", inputs(Stage.TRAINING, topology="transformer", blueprint="lora", **{**G2_OK, "grad_ratio": 0.1}), t)
    assert not r.passed and check(r, "grad_ratio").threshold == 0.2
    r = evaluate("G2", inputs(Stage.TRAINING, blueprint="norm", **G2_OK), t)
    assert not r.passed and check(r, "grad_ratio").threshold == 0.6
    r = evaluate("G2", inputs(Stage.TRAINING, blueprint="attention", **G2_OK), t)
    assert r.passed


def test_g2_relative_mode():
    t = GateThresholds(ratio_mode="relative", relative_fraction=0.05)
    ok = evaluate("G2", inputs(Stage.TRAINING, **{**G2_OK, "grad_ratio": 0.03, "grad_ratio_mean": 0.5}), t)
    assert ok.passed and check(ok, "grad_ratio_relative").threshold == pytest.approx(0.025)
    low = evaluate("G2", inputs(Stage.TRAINING, **{**G2_OK, "grad_ratio": 0.02, "grad_ratio_mean": 0.5}), t)
    assert not low.passed


@pytest.mark.parametrize("ratio,warned", [(0.2, True), (0.239, True), (0.2401, False), (0.199, False)])
def test_g2_near_threshold_warning(ratio, warned):
    r = evaluate("G2", inputs(Stage.TRAINING, **{**G2_OK, "grad_ratio": ratio}))
    assert bool(r.warnings) == warned
    if warned:
        assert r.warnings[0].code == "ratio_near_threshold"


def test_g3_alpha_complete_and_epochs():
    assert evaluate("G3", inputs(Stage.BLENDING, alpha=0.995, epochs_in_stage=3)).passed
    assert not check(evaluate("G3", inputs(Stage.BLENDING, alpha=0.9, epochs_in_stage=5)), "alpha").passed
    assert not check(evaluate("G3", inputs(Stage.BLENDING, alpha=1.0, epochs_in_stage=2)), "epochs_in_stage").passed


G4_OK = dict(epochs_in_stage=2, val_loss=0.50, val_loss_pre_blend=0.49, counterfactual=0.0)


def test_g4_stability():
    assert evaluate("G4", inputs(Stage.SHADOWING, **G4_OK)).passed
    r = evaluate("G4", inputs(Stage.SHADOWING, **{**G4_OK, "val_loss": 0.6}))
    c = check(r, "val_loss_vs_pre_blend")
    assert not c.passed and c.threshold == pytest.approx(0.49 * 1.05)
    assert not evaluate("G4", inputs(Stage.SHADOWING, **{**G4_OK, "nonfinite_in_stage": True})).passed
    assert not evaluate("G4", inputs(Stage.SHADOWING, **{**G4_OK, "counterfactual": -0.1})).passed
    assert not evaluate("G4", inputs(Stage.SHADOWING, **{**G4_OK, "counterfactual": None})).passed
    assert not evaluate("G4", inputs(Stage.SHADOWING, **{**G4_OK, "val_loss_pre_blend": None})).passed
    assert not evaluate("G4", inputs(Stage.SHADOWING, **{**G4_OK, "epochs_in_stage": 1})).passed


def test_g4_credit_check_carries_the_whole_estimate():
    r = evaluate("G4", inputs(Stage.SHADOWING, **{**G4_OK, "counterfactual": 0.4, "credit_low": -0.3,
                                                  "credit_high": 1.1, "credit_method": "shadow_twin"}))
    c = check(r, "counterfactual")
    assert c.passed and c.value == 0.4  # G4 asks only that the point estimate is not negative
    assert (c.credit.credit_low, c.credit.credit_high, c.credit.credit_method) == (-0.3, 1.1, "shadow_twin")


def g5_inputs(cf=3.0, low=1.5, high=4.5, epochs=3, **kw):
    return inputs(Stage.PROBATIONARY, epochs_in_stage=epochs, counterfactual=cf, credit_low=low,
                  credit_high=high, credit_method="shadow_twin", **kw)


@pytest.mark.parametrize("cf,low,passed", [(None, None, False), (3.0, 0.5, False), (1.5, 0.99, False),
                                           (2.0, 1.0, True), (3.2, 2.1, True)])
def test_g5_passes_on_the_lower_bound_of_the_credit(cf, low, passed):
    r = evaluate("G5", g5_inputs(cf=cf, low=low))
    assert r.passed is passed and r.target is Stage.FOSSILIZED
    c = check(r, "credit_low")
    assert c.threshold == 1.0 and c.value == low and c.credit.counterfactual == cf


def test_g5_waits_a_minimum_of_epochs_in_probation():
    assert not evaluate("G5", g5_inputs(epochs=2)).passed
    assert not check(evaluate("G5", g5_inputs(epochs=0)), "epochs_in_stage").passed
    assert evaluate("G5", g5_inputs(epochs=3)).passed
    assert evaluate("G5", g5_inputs(epochs=1), GateThresholds(g5_min_epochs=1)).passed


def test_g5_needs_a_healthy_seed():
    assert not evaluate("G5", g5_inputs(cf=5.0, low=4.0, seed_healthy=False)).passed


@pytest.mark.parametrize("gate,stage", [("G1", Stage.TRAINING), ("G2", Stage.BLENDING), ("G3", Stage.SHADOWING),
                                        ("G4", Stage.TRAINING), ("G5", Stage.SHADOWING)])
def test_gates_refuse_the_wrong_stage(gate, stage):
    r = evaluate(gate, inputs(stage, **G2_OK, alpha=1.0, counterfactual=5.0))
    assert not check(r, "stage").passed and not r.passed


def test_every_threshold_is_configurable_and_validated():
    t = GateThresholds(g2_min_epochs=1, g3_min_epochs=1, g4_min_epochs=1, g5_min_epochs=0, g5_min_counterfactual=0.0)
    assert evaluate("G5", inputs(Stage.PROBATIONARY, counterfactual=0.0, credit_low=0.0), t).passed
    with pytest.raises(ValueError):
        GateThresholds(no_such_threshold=1)  # typo'd settings are refused, not ignored


def test_results_are_data_not_strings():
    r = evaluate("G2", inputs(Stage.TRAINING, **G2_OK))
    dumped = r.model_dump(mode="json")
    assert dumped["gate"] == "G2" and dumped["target"] == "BLENDING"
    assert all(set(c) == {"name", "value", "threshold", "passed", "op"} for c in dumped["checks"])


@pytest.mark.parametrize(("check", "words"), [
    (GateCheck(name="alpha", value=0.35, threshold=0.99, passed=False, op=">="), "needs alpha ≥ 0.99 (now 0.35)"),
    (GateCheck(name="alpha", value=1.0, threshold=0.99, passed=True, op=">="), "alpha 1 ≥ 0.99"),
    (GateCheck(name="seed_grad_not_exploding", value=250.0, threshold=100.0, passed=False, op="<="),
     "needs seed gradient norm at most 100 (now 250)"),
    (GateCheck(name="seed_built", value=False, threshold=True, passed=False), "needs seed built (now no)"),
    (GateCheck(name="credit_low", value=None, threshold=1.0, passed=False, op=">="),
     "needs credit's lower bound ≥ 1 (not measured yet)"),
])
def test_a_check_reads_as_a_sentence_with_its_comparator(check, words):
    assert check.sentence == words


def test_every_threshold_check_says_which_way_it_goes():
    # No bare "x vs y": each numeric check of a real gate carries ≥ or "at most".
    results = [evaluate("G2", inputs(Stage.TRAINING, **G2_OK)), evaluate("G3", inputs(Stage.BLENDING)),
               evaluate("G4", inputs(Stage.SHADOWING)), evaluate("G5", inputs(Stage.PROBATIONARY))]
    numeric = [c for r in results for c in r.checks
               if isinstance(c.threshold, (int, float)) and not isinstance(c.threshold, bool)]
    assert numeric and all(c.op in (">=", "<=") for c in numeric)


def test_refused_has_no_gate_and_says_why():
    r = refused(None, "FOSSILIZED has no next stage", Stage.FOSSILIZED)
    assert r.gate is None and not r.passed and not r.applied
    assert "FOSSILIZED has no next stage" in r.reason
