"""Alpha curves for the BLENDING ramp: progress in [0, 1] → alpha in [0, 1]. Torch-free.

The slot turns the value into its alpha tensor buffer; keeping the curve pure makes it testable and
lets the dashboard draw the planned ramp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Curve = Literal["linear", "cosine", "sigmoid"]
CURVES: tuple[Curve, ...] = ("linear", "cosine", "sigmoid")


def alpha_at(progress: float, curve: Curve = "cosine", temperature: float = 0.1) -> float:
    """Alpha after `progress` (fraction of the ramp done, clamped to [0, 1]).

    Every curve hits exactly 0.0 at progress 0 and exactly 1.0 at progress 1.

    `sigmoid` is tanh((p - 1/2) / temperature), rescaled so its ends land on 0 and 1. Smaller
    temperatures make it steeper; as temperature → 0 it becomes an *instant transition*: alpha stays 0
    for the first half of the ramp, is 1/2 exactly at the midpoint, and is 1 for the second half.
    A temperature ≤ 0 selects that step directly (dividing by it would not be defined).
    """
    p = min(1.0, max(0.0, float(progress)))
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    if curve == "linear":
        return p
    if curve == "cosine":
        return 0.5 - 0.5 * math.cos(math.pi * p)
    if curve == "sigmoid":
        if temperature <= 0.0:
            return 0.0 if p < 0.5 else (0.5 if p == 0.5 else 1.0)
        lo = math.tanh(-0.5 / temperature)
        hi = math.tanh(0.5 / temperature)
        if hi - lo == 0.0:  # cannot happen for finite temperature > 0; kept so we never divide by 0
            return 0.0 if p < 0.5 else 1.0
        value = (math.tanh((p - 0.5) / temperature) - lo) / (hi - lo)
        return min(1.0, max(0.0, value))
    raise ValueError(f"unknown alpha curve {curve!r}; choose one of {', '.join(CURVES)}")


@dataclass(frozen=True, slots=True)
class AlphaSchedule:
    """A ramp over `steps` optimizer steps. `value(k)` is alpha after k steps of BLENDING."""

    steps: int
    curve: Curve = "cosine"
    temperature: float = 0.1

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"blend steps must be at least 1, got {self.steps}")
        if self.curve not in CURVES:
            raise ValueError(f"unknown alpha curve {self.curve!r}; choose one of {', '.join(CURVES)}")

    def value(self, step: int) -> float:
        return alpha_at(step / self.steps, self.curve, self.temperature)

    def done(self, step: int) -> bool:
        return step >= self.steps
