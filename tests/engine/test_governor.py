"""The governor's loss judgement (SPEC §5): NaN/Inf at once, spikes only against enough history,
ordinary noise never. Torch-free.
"""

from __future__ import annotations

import math
import random

import pytest

from engine.governor import GovernorConfig, LossWatch


def warmed(value: float = 0.1, n: int | None = None, config: GovernorConfig | None = None) -> LossWatch:
    """A watch that has seen `n` (default: min_history) healthy losses of `value`."""
    watch = LossWatch(config)
    count = watch.config.min_history if n is None else n
    assert watch.judge([value] * count) is None
    return watch


class TestNonFinite:
    def test_nan_with_no_history(self):
        verdict = LossWatch().judge([float("nan")])
        assert verdict is not None
        trigger, loss = verdict
        assert trigger == "nan"
        assert math.isnan(loss)

    def test_inf_with_no_history(self):
        assert LossWatch().judge([float("inf")]) == ("inf", float("inf"))

    def test_negative_inf_is_inf(self):
        trigger, loss = LossWatch().judge([float("-inf")])
        assert trigger == "inf" and loss == float("-inf")

    def test_first_unhealthy_value_is_reported(self):
        watch = LossWatch()
        trigger, _ = watch.judge([0.5, float("inf"), float("nan")])
        assert trigger == "inf"
        assert list(watch.recent) == [0.5]  # healthy ones before it were kept; the bad one was not

    def test_nan_is_never_kept(self):
        watch = warmed()
        before = list(watch.recent)
        assert watch.judge([float("nan")])[0] == "nan"
        assert list(watch.recent) == before


class TestSpike:
    def test_not_flagged_before_min_history(self):
        watch = warmed(0.1, n=19)
        assert watch.judge([100.0]) is None
        # With too little history a big value is simply history (the run has only just started).
        assert watch.recent[-1] == 100.0
        assert len(watch.recent) == 20

    def test_flagged_after_min_history(self):
        watch = warmed(0.1, n=20)
        assert watch.judge([100.0]) == ("spike", 100.0)

    def test_spike_is_not_kept(self):
        watch = warmed(0.1)
        before = list(watch.recent)
        assert watch.judge([100.0]) is not None
        assert list(watch.recent) == before

    def test_min_history_is_configurable(self):
        cfg = GovernorConfig(min_history=3)
        watch = warmed(0.1, n=3, config=cfg)
        assert watch.judge([50.0]) == ("spike", 50.0)

    def test_margin_dominates_at_low_loss(self):
        # median 0.1: threshold = max(10 × 0.1, 0.1 + 2) = 2.1
        watch = warmed(0.1)
        assert watch.judge([1.0]) is None  # ten times the median, still noise at this scale
        watch = warmed(0.1)
        assert watch.judge([2.1]) is None  # exactly at the threshold: not above it
        watch = warmed(0.1)
        assert watch.judge([2.2]) == ("spike", 2.2)

    def test_factor_dominates_at_high_loss(self):
        # median 1.0: threshold = max(10 × 1.0, 1.0 + 2) = 10
        watch = warmed(1.0)
        assert watch.judge([10.0]) is None
        watch = warmed(1.0)
        assert watch.judge([10.5]) == ("spike", 10.5)

    def test_median_not_mean(self):
        # One earlier outlier (kept before min_history) must not lift the reference level much.
        watch = LossWatch()
        assert watch.judge([0.1] * 10 + [40.0] + [0.1] * 9) is None
        # median 0.1 → threshold 2.1 (a mean of ~2.1 would have put it near 21)
        assert watch.judge([3.0]) == ("spike", 3.0)

    def test_healthy_values_before_a_spike_in_the_same_batch_are_kept(self):
        watch = warmed(0.1)
        assert watch.judge([0.2, 0.3, 50.0, 0.4]) == ("spike", 50.0)
        assert list(watch.recent)[-2:] == [0.2, 0.3]
        assert 50.0 not in watch.recent

    def test_healthy_value_after_a_spike_is_still_appended(self):
        watch = warmed(0.1)
        assert watch.judge([50.0])[0] == "spike"
        n = len(watch.recent)
        assert watch.judge([0.2]) is None
        assert len(watch.recent) == n + 1
        assert watch.recent[-1] == 0.2
        # And the spike is still judged as one next time: it never entered the history.
        assert watch.judge([50.0])[0] == "spike"

    def test_window_bounds_history(self):
        cfg = GovernorConfig(window=10, min_history=5)
        watch = LossWatch(cfg)
        assert watch.judge([0.1] * 30) is None
        assert len(watch.recent) == 10


class TestNoise:
    def test_low_loss_noise_never_triggers(self):
        rng = random.Random(0)
        watch = LossWatch()
        for _ in range(200):
            batch = [rng.uniform(0.01, 0.3) for _ in range(25)]
            assert watch.judge(batch) is None

    def test_low_loss_noise_with_tiny_median(self):
        # Mostly near-zero losses (median 0.01) with occasional 0.3: thirty times the median, not a spike.
        watch = LossWatch()
        values = [0.01] * 40 + [0.3, 0.01, 0.01, 0.3] * 20
        assert watch.judge(values) is None

    def test_gradual_rise_never_triggers(self):
        watch = LossWatch()
        loss = 0.5
        for _ in range(600):
            loss *= 1.01
            assert watch.judge([loss]) is None
        assert loss > 100  # it rose a lot, but never suddenly

    def test_slow_linear_rise_never_triggers(self):
        watch = LossWatch()
        assert watch.judge([0.05 * i for i in range(1, 500)]) is None

    def test_falling_loss_never_triggers(self):
        watch = LossWatch()
        assert watch.judge([10.0 / (1 + i) for i in range(500)]) is None


class TestReset:
    def test_reset_clears_history(self):
        watch = warmed(0.1)
        assert len(watch.recent) == 20
        watch.reset()
        assert len(watch.recent) == 0
        # With no history a big value is no spike (until min_history is rebuilt).
        assert watch.judge([100.0]) is None

    def test_reset_keeps_nan_detection(self):
        watch = warmed(0.1)
        watch.reset()
        assert watch.judge([float("nan")])[0] == "nan"


def test_config_defaults_and_frozen():
    cfg = GovernorConfig()
    assert cfg.enabled is True
    assert (cfg.spike_factor, cfg.spike_margin, cfg.window, cfg.min_history) == (10.0, 2.0, 50, 20)
    assert cfg.max_consecutive_rollbacks == 3
    with pytest.raises(Exception):
        cfg.window = 3  # type: ignore[misc]
    with pytest.raises(Exception):
        GovernorConfig(bogus=1)
