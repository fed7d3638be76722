"""Per-seed metrics and the gradient-ratio arithmetic (SPEC §3, review §1.2 and §2). Torch-free.

The torch side (`engine.isolation.grad_sq_norms`) produces squared gradient norms on the device; this
module turns them into a bounded, bias-corrected ratio on plain floats.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

GRADIENT_EPSILON = 1e-12
RATIO_CLAMP = 10.0
EMA_DECAY = 0.9


def gradient_ratio(
    seed_sq: float,
    n_seed: int,
    host_sq: float,
    n_host: int,
    *,
    epsilon: float = GRADIENT_EPSILON,
    clamp: float = RATIO_CLAMP,
) -> float | None:
    """Parameter-normalized gradient ratio `(‖g_seed‖/√n_seed) / (‖g_host‖/√n_host)`, clamped to [0, clamp].

    Takes squared norms (what a grouped norm reduction yields). Returns None — *unmeasurable* — when
    the host has (almost) no gradient, or either side has no parameters, or a norm is not finite;
    never `seed_norm / epsilon`.
    """
    if n_seed <= 0 or n_host <= 0:
        return None
    if not (math.isfinite(seed_sq) and math.isfinite(host_sq)):
        return None
    host_norm = math.sqrt(max(host_sq, 0.0))
    if host_norm < epsilon:
        return None
    seed_norm = math.sqrt(max(seed_sq, 0.0))
    raw = (seed_norm / math.sqrt(n_seed)) / (host_norm / math.sqrt(n_host))
    return min(clamp, max(0.0, raw))


@dataclass(slots=True)
class BiasCorrectedEMA:
    """Exponential moving average with Adam-style bias correction.

    Without correction the first update reports `(1 - decay) * x`, a tenth of the truth at decay 0.9
    (review §2). With it, the first value equals the first sample exactly. `None` samples
    (unmeasurable) are skipped, not averaged in as 0. `mean` is the plain running mean of all samples,
    used by G2's relative mode.
    """

    decay: float = EMA_DECAY
    _avg: float = 0.0
    _count: int = 0
    _sum: float = 0.0

    def update(self, sample: float | None) -> float | None:
        if sample is None or not math.isfinite(sample):
            return self.value
        self._count += 1
        self._avg = self.decay * self._avg + (1.0 - self.decay) * sample
        self._sum += sample
        return self.value

    @property
    def value(self) -> float | None:
        if self._count == 0:
            return None
        return self._avg / (1.0 - self.decay**self._count)

    @property
    def mean(self) -> float | None:
        return None if self._count == 0 else self._sum / self._count

    @property
    def count(self) -> int:
        return self._count

    def reset(self) -> None:
        self._avg, self._count, self._sum = 0.0, 0, 0.0

    def state_dict(self) -> dict[str, float | int]:
        return {"decay": self.decay, "avg": self._avg, "count": self._count, "sum": self._sum}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.decay = float(state["decay"])
        self._avg, self._count, self._sum = float(state["avg"]), int(state["count"]), float(state["sum"])


@dataclass(slots=True)
class SeedMetrics:
    """What the engine has measured about one seed. Reset when a new seed is germinated.

    `counterfactual` is the seed's credit: the accuracy points it adds, as estimated by
    `credit_method` (engine.credit), with the interval [`credit_low`, `credit_high`].
    `blending_delta` is accuracy now minus at blend start: it mixes the seed's effect with host drift,
    so it is shown (labelled as confounded) but no decision reads it (review §1.1).
    """

    grad_ratio: BiasCorrectedEMA = field(default_factory=BiasCorrectedEMA)
    last_ratio_sample: float | None = None
    seed_grad_norm: float | None = None
    seed_grad_finite: bool = True
    counterfactual: float | None = None
    credit_low: float | None = None
    credit_high: float | None = None
    credit_method: str | None = None
    credit_compare: dict[str, list[float]] | None = None  # other estimators' [value, low, high]
    counterfactual_history: list[float] = field(default_factory=list)
    val_loss: float | None = None
    val_accuracy: float | None = None
    val_loss_pre_blend: float | None = None
    accuracy_at_blend_start: float | None = None
    accuracy_at_stage_start: float | None = None
    nonfinite_in_stage: bool = False
    seed_healthy: bool = True

    def record_gradients(self, seed_sq: float, n_seed: int, host_sq: float, n_host: int) -> float | None:
        """Fold one gradient measurement in; returns the smoothed ratio (None while unmeasurable)."""
        sample = gradient_ratio(seed_sq, n_seed, host_sq, n_host)
        self.last_ratio_sample = sample
        finite = math.isfinite(seed_sq)
        self.seed_grad_finite = finite
        self.seed_grad_norm = math.sqrt(seed_sq) if finite and seed_sq >= 0 else float("inf")
        if not finite:
            self.seed_healthy = False
        return self.grad_ratio.update(sample)

    def record_credit(self, value: float, low: float, high: float, method: str) -> None:
        """Fold in one epoch's credit estimate (points, with its interval and estimator)."""
        self.counterfactual, self.credit_low, self.credit_high, self.credit_method = value, low, high, method
        self.counterfactual_history.append(value)

    @property
    def blending_delta(self) -> float | None:
        """Confounded by host drift: display only."""
        if self.val_accuracy is None or self.accuracy_at_blend_start is None:
            return None
        return self.val_accuracy - self.accuracy_at_blend_start

    def to_dict(self) -> dict:
        """Plain values only (checkpoints load with `weights_only=True`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict) -> SeedMetrics:
        state = dict(state)
        ema = BiasCorrectedEMA(**state.pop("grad_ratio"))
        return cls(grad_ratio=ema, **state)
