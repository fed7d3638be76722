"""Gradient ratio edge cases and the bias-corrected EMA (review §1.2, §2)."""

import math

import pytest

from engine.metrics import BiasCorrectedEMA, SeedMetrics, gradient_ratio


def test_ratio_is_parameter_normalized():
    # seed: norm 2 over 4 params → 1 per √param; host: norm 10 over 100 params → 1 per √param.
    assert gradient_ratio(4.0, 4, 100.0, 100) == pytest.approx(1.0)
    # Same norms, but the seed has 4x fewer parameters: per-parameter it pushes twice as hard.
    assert gradient_ratio(4.0, 1, 4.0, 4) == pytest.approx(2.0)


@pytest.mark.parametrize("host_sq", [0.0, 1e-30, -0.0])
def test_absent_host_gradient_is_unmeasurable_not_huge(host_sq):
    assert gradient_ratio(5.0, 10, host_sq, 10) is None


def test_ratio_is_clamped_to_ten_and_nonnegative():
    assert gradient_ratio(1e6, 1, 1e-6, 1) == 10.0
    assert gradient_ratio(0.0, 5, 1.0, 5) == 0.0


@pytest.mark.parametrize("args", [(math.nan, 1, 1.0, 1), (1.0, 1, math.inf, 1), (1.0, 0, 1.0, 1), (1.0, 1, 1.0, 0)])
def test_nonfinite_or_empty_is_unmeasurable(args):
    assert gradient_ratio(*args) is None


def test_first_ema_update_equals_the_sample():
    ema = BiasCorrectedEMA(decay=0.9)
    assert ema.value is None
    assert ema.update(0.3) == pytest.approx(0.3)  # not 0.03 (the uncorrected bug)


def test_ema_constant_stream_stays_constant_and_tracks_changes():
    ema = BiasCorrectedEMA(decay=0.9)
    for _ in range(5):
        ema.update(2.0)
    assert ema.value == pytest.approx(2.0)
    for _ in range(100):
        ema.update(4.0)
    assert ema.value == pytest.approx(4.0, rel=1e-3)
    assert ema.mean == pytest.approx((5 * 2.0 + 100 * 4.0) / 105)


def test_ema_skips_unmeasurable_samples_and_resets():
    ema = BiasCorrectedEMA()
    ema.update(None)
    ema.update(math.nan)
    assert ema.count == 0 and ema.value is None
    ema.update(1.0)
    assert ema.count == 1
    state = ema.state_dict()
    other = BiasCorrectedEMA()
    other.load_state_dict(state)
    assert other.value == ema.value and other.count == 1
    ema.reset()
    assert ema.value is None and ema.mean is None


def test_seed_metrics_records_gradients_and_counterfactual():
    m = SeedMetrics()
    assert m.record_gradients(4.0, 4, 100.0, 100) == pytest.approx(1.0)
    assert m.seed_grad_norm == pytest.approx(2.0) and m.seed_grad_finite
    assert m.record_gradients(4.0, 4, 0.0, 100) == pytest.approx(1.0)  # unmeasurable: EMA unchanged
    assert m.last_ratio_sample is None
    m.record_gradients(math.inf, 4, 1.0, 100)
    assert not m.seed_grad_finite and not m.seed_healthy
    m.record_credit(2.5, 1.0, 4.0, "shadow_twin")
    assert (m.counterfactual, m.credit_low, m.credit_high, m.credit_method) == (2.5, 1.0, 4.0, "shadow_twin")
    assert m.counterfactual_history == [pytest.approx(2.5)]


def test_blending_delta_is_display_only_and_missing_when_unmeasured():
    m = SeedMetrics()
    assert m.blending_delta is None
    m.accuracy_at_blend_start, m.val_accuracy = 80.0, 83.0
    assert m.blending_delta == pytest.approx(3.0)
