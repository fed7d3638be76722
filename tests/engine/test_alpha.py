"""Alpha curves: exact ends, monotone, and the sigmoid's instant-transition limit."""

import math

import pytest

from engine.alpha import CURVES, AlphaSchedule, alpha_at

GRID = [i / 100 for i in range(101)]


@pytest.mark.parametrize("curve", CURVES)
@pytest.mark.parametrize("temperature", [0.0, 1e-6, 0.05, 0.1, 1.0, 10.0])
def test_exact_ends_and_monotone(curve, temperature):
    values = [alpha_at(p, curve, temperature) for p in GRID]
    assert values[0] == 0.0
    assert values[-1] == 1.0
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(b >= a for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("curve", CURVES)
def test_progress_is_clamped(curve):
    assert alpha_at(-3.0, curve) == 0.0
    assert alpha_at(7.0, curve) == 1.0


def test_linear_and_cosine_values():
    assert alpha_at(0.25, "linear") == 0.25
    assert alpha_at(0.5, "cosine") == pytest.approx(0.5)
    assert alpha_at(0.25, "cosine") == pytest.approx(0.5 - 0.5 * math.cos(math.pi / 4))


def test_sigmoid_is_symmetric_about_the_midpoint():
    for p in (0.1, 0.3, 0.45):
        assert alpha_at(p, "sigmoid", 0.2) + alpha_at(1 - p, "sigmoid", 0.2) == pytest.approx(1.0)
    assert alpha_at(0.5, "sigmoid", 0.2) == pytest.approx(0.5)


@pytest.mark.parametrize("temperature", [1e-3, 1e-6, 1e-12, 0.0])
def test_sigmoid_instant_transition_as_temperature_goes_to_zero(temperature):
    """Documented behaviour: a step at the midpoint (0 before, 1/2 at, 1 after)."""
    assert alpha_at(0.49, "sigmoid", temperature) == pytest.approx(0.0, abs=1e-6)
    assert alpha_at(0.5, "sigmoid", temperature) == pytest.approx(0.5)
    assert alpha_at(0.51, "sigmoid", temperature) == pytest.approx(1.0, abs=1e-6)


def test_sigmoid_gets_steeper_as_temperature_falls():
    slopes = [alpha_at(0.55, "sigmoid", t) - alpha_at(0.45, "sigmoid", t) for t in (1.0, 0.3, 0.1, 0.03)]
    assert slopes == sorted(slopes)


def test_schedule_steps_and_validation():
    sched = AlphaSchedule(steps=4, curve="linear")
    assert [sched.value(k) for k in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert not sched.done(3) and sched.done(4)
    with pytest.raises(ValueError, match="at least 1"):
        AlphaSchedule(steps=0)
    with pytest.raises(ValueError, match="unknown alpha curve"):
        AlphaSchedule(steps=3, curve="cubic")  # type: ignore[arg-type]
