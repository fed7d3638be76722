"""Quality gates G0–G5: pure functions from a metrics snapshot to a structured verdict.

Torch-free. A gate never raises and never returns a bare string: every verdict lists its checks, each
with the measured value, the threshold and whether it passed. Missing measurements fail their check
with value None (shown as "—"), they are never read as 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from engine.lifecycle import Stage

CheckValue = bool | int | float | str | None
Comparator = Literal[">=", "<=", "=="]


class CreditReport(BaseModel):
    """A seed's measured credit: accuracy points it adds (`counterfactual`), an interval around it
    (`credit_low`, `credit_high`) and the estimator that produced it (`credit_method`)."""

    model_config = ConfigDict(frozen=True)

    counterfactual: float | None = None
    credit_low: float | None = None
    credit_high: float | None = None
    credit_method: str | None = None


class GateCheck(BaseModel):
    """One measured condition of a gate. Checks on a seed's credit also carry the whole estimate."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: CheckValue
    threshold: CheckValue
    passed: bool
    op: Comparator | None = None  # how value is held against threshold (None: by name, `CHECK_OPS`)
    credit: CreditReport | None = None

    @property
    def sentence(self) -> str:
        """The check in words: "alpha 1.00 ≥ 0.99" when it holds, "needs alpha ≥ 0.99 (now 0.35)"
        when it does not; a maximum reads "at most", a yes/no check "seed built: yes"."""
        return check_sentence(self)

    @model_serializer(mode="wrap")
    def _drop_absent_credit(self, handler):  # only credit checks carry it; keep other lines short
        data = handler(self)
        if data.get("credit", 0) is None:
            del data["credit"]
        return data


class GateWarning(BaseModel):
    """Something worth the operator's attention even though the gate decided (e.g. near threshold)."""

    model_config = ConfigDict(frozen=True)

    code: str
    message: str


class GateResult(BaseModel):
    """A gate's verdict. `gate` is None only when the edge itself was illegal (no gate applies).

    `forced` is set by the slot when the operator bypassed a failing gate: the transition happened and
    this (failing) result is what gets logged beside it.
    """

    model_config = ConfigDict(frozen=True)

    gate: str | None
    target: Stage | None
    passed: bool
    checks: tuple[GateCheck, ...]
    warnings: tuple[GateWarning, ...] = ()
    forced: bool = False

    @property
    def applied(self) -> bool:
        """Whether the transition took place (passed, or forced past a failing gate)."""
        return self.passed or self.forced

    @property
    def failed_checks(self) -> tuple[GateCheck, ...]:
        return tuple(c for c in self.checks if not c.passed)

    @property
    def reason(self) -> str:
        """One line for logs and the UI: which checks failed, with value vs threshold."""
        label = self.gate or "transition"
        if self.passed:
            return f"{label} passed"
        if self.gate is None:  # an illegal edge: the check's threshold carries the explanation
            return "refused: " + "; ".join(str(c.threshold) for c in self.failed_checks)
        return f"{label} failed: " + "; ".join(c.sentence for c in self.failed_checks)


def _fmt(v: CheckValue) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# What each check measures, in words (a check not listed is shown by its name, underscores as spaces).
CHECK_LABELS: dict[str, str] = {
    "slot_exists": "slot exists",
    "slot_dormant": "slot",
    "blueprint_registered": "blueprint",
    "shape_preserved": "output shape",
    "param_budget": "seed parameters",
    "stage": "stage",
    "seed_built": "seed built",
    "on_host_device": "on the host's device",
    "on_host_dtype": "in the host's dtype",
    "probe_output_finite": "probe output finite",
    "epochs_in_stage": "epochs in stage",
    "host_gradients_absent": "gradient ratio",
    "grad_ratio": "gradient ratio",
    "grad_ratio_relative": "gradient ratio (relative to its mean)",
    "seed_grad_finite": "seed gradients finite",
    "seed_grad_not_exploding": "seed gradient norm",
    "alpha": "alpha",
    "finite_loss": "loss finite",
    "val_loss_vs_pre_blend": "val loss (vs before blending, with tolerance)",
    "counterfactual": "credit",
    "credit_low": "credit's lower bound",
    "seed_healthy": "seed healthy",
    "legal_transition": "transition",
}
# Which way each threshold check goes, declared once: the gates stamp it on every check, and a log
# written before checks carried it is read with the same table.
CHECK_OPS: dict[str, Comparator] = {
    "param_budget": "<=",
    "epochs_in_stage": ">=",
    "grad_ratio": ">=",
    "grad_ratio_relative": ">=",
    "seed_grad_not_exploding": "<=",
    "alpha": ">=",
    "val_loss_vs_pre_blend": "<=",
    "counterfactual": ">=",
    "credit_low": ">=",
}


def check_sentence(check: GateCheck) -> str:
    """One check as a sentence (see `GateCheck.sentence`). Unmeasured values read "not measured yet"."""
    label = CHECK_LABELS.get(check.name, check.name.replace("_", " "))
    value, threshold = _fmt(check.value), _fmt(check.threshold)
    if check.name == "legal_transition":
        return f"not a legal move: {threshold}"
    now = "not measured yet" if check.value is None else f"now {value}"
    op = check.op or CHECK_OPS.get(check.name, "==")
    if op == ">=":
        return f"{label} {value} ≥ {threshold}" if check.passed else f"needs {label} ≥ {threshold} ({now})"
    if op == "<=":
        return f"{label} {value}, at most {threshold}" if check.passed else f"needs {label} at most {threshold} ({now})"
    if isinstance(check.threshold, bool):
        return f"{label}: {value}" if check.passed else f"needs {label} ({now})"
    return f"{label} {value}" if check.passed else f"needs {label} {threshold} ({now})"


class GateThresholds(BaseModel):
    """Every gate threshold, with the defaults of SPEC §3. All are configurable per run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # G0
    param_budget_fraction: float = Field(
        1.5, gt=0, description="all seeds' parameters may total at most this fraction of the seedless host's "
        "(1.5: room for one conv_wide seed in the default host's narrow first block)"
    )
    # G2
    g2_min_epochs: int = 3
    # From measurement (issue 7): smoothed ratios of seeds that went on to learn, in TRAINING, ranged
    # CNN 0.33–4.3 (digits, mnist5k; every CNN blueprint) and Transformer 0.08–7.6 (text). Each
    # threshold sits at about half the lowest of its topology, so it refuses a seed whose gradient
    # is weaker than any learning seed's, where the old 0.05 never refused a CNN seed.
    ratio_threshold: dict[str, float] = Field(default_factory=lambda: {"cnn": 0.2, "transformer": 0.04})
    ratio_threshold_per_blueprint: dict[str, float] = Field(
        default_factory=dict, description='overrides keyed "topology/blueprint", e.g. "cnn/norm"'
    )
    ratio_mode: Literal["absolute", "relative"] = "absolute"
    relative_fraction: float = 0.05
    near_threshold_margin: float = 0.20
    max_seed_grad_norm: float = 1.0e3
    # G3
    g3_min_epochs: int = 3
    g3_min_alpha: float = 0.99
    # G4
    g4_min_epochs: int = 2
    g4_val_loss_tolerance: float = Field(
        0.05, description="relative: val loss may exceed its pre-blend level by at most this fraction"
    )
    g4_min_counterfactual: float = Field(0.0, description="the credit's point estimate must be at least this")
    # G5
    g5_min_epochs: int = Field(
        3, ge=0, description="epochs in PROBATIONARY before G5 may pass: decide on several measurements"
    )
    g5_min_counterfactual: float = Field(
        1.0, description="the credit's *lower bound* (credit_low) must be at least this many points"
    )

    def ratio_threshold_for(self, topology: str, blueprint: str | None) -> float:
        """The absolute G2 threshold for a seed: per-blueprint override, else per-topology default."""
        key = f"{topology}/{blueprint}"
        if key in self.ratio_threshold_per_blueprint:
            return self.ratio_threshold_per_blueprint[key]
        return self.ratio_threshold.get(topology, 0.04)


@dataclass(frozen=True, slots=True)
class GateInputs:
    """A snapshot of what the gates may look at for one slot. Plain values; None = not measured."""

    slot_id: str
    topology: str
    stage: Stage
    epochs_in_stage: int = 0
    blueprint: str | None = None
    # G0 (filled by the slot when it tries to germinate)
    slot_exists: bool = True
    embargoed: bool = False
    blueprint_registered: bool = False
    probe_shape_in: tuple[int, ...] | None = None
    probe_shape_out: tuple[int, ...] | None = None
    seed_params: int | None = None
    param_budget: int | None = None
    # G1
    seed_built: bool = False
    on_host_device: bool = False
    on_host_dtype: bool = False
    probe_finite: bool = False
    # G2
    grad_ratio: float | None = None
    grad_ratio_mean: float | None = None
    seed_grad_finite: bool = True
    seed_grad_norm: float | None = None
    # G3
    alpha: float = 0.0
    # G4 / G5
    nonfinite_in_stage: bool = False
    val_loss: float | None = None
    val_loss_pre_blend: float | None = None
    counterfactual: float | None = None
    credit_low: float | None = None
    credit_high: float | None = None
    credit_method: str | None = None
    seed_healthy: bool = True

    @property
    def credit(self) -> CreditReport:
        return CreditReport(counterfactual=self.counterfactual, credit_low=self.credit_low,
                            credit_high=self.credit_high, credit_method=self.credit_method)


def _check(name: str, value: CheckValue, threshold: CheckValue, passed: bool,
           credit: CreditReport | None = None) -> GateCheck:
    return GateCheck(name=name, value=value, threshold=threshold, passed=bool(passed),
                     op=CHECK_OPS.get(name, "=="), credit=credit)


def _stage_check(s: GateInputs, required: Stage) -> GateCheck:
    return _check("stage", str(s.stage), str(required), s.stage is required)


def _result(gate: str, target: Stage, checks: list[GateCheck], warnings: list[GateWarning] = ()) -> GateResult:
    return GateResult(
        gate=gate,
        target=target,
        passed=all(c.passed for c in checks),
        checks=tuple(checks),
        warnings=tuple(warnings),
    )


def g0_germinate(s: GateInputs, t: GateThresholds) -> GateResult:
    """DORMANT → GERMINATED: the slot is free, the blueprint exists, fits and preserves shape."""
    checks = [
        _check("slot_exists", s.slot_exists, True, s.slot_exists),
        _check("slot_dormant", str(s.stage), str(Stage.DORMANT), s.stage is Stage.DORMANT and not s.embargoed),
        _check("blueprint_registered", s.blueprint, "registered", s.blueprint_registered),
    ]
    shape_ok = s.probe_shape_out is not None and s.probe_shape_out == s.probe_shape_in
    checks.append(
        _check(
            "shape_preserved",
            None if s.probe_shape_out is None else "x".join(map(str, s.probe_shape_out)),
            None if s.probe_shape_in is None else "x".join(map(str, s.probe_shape_in)),
            shape_ok,
        )
    )
    within = s.seed_params is not None and (s.param_budget is None or s.seed_params <= s.param_budget)
    checks.append(_check("param_budget", s.seed_params, s.param_budget, within))
    return _result("G0", Stage.GERMINATED, checks)


def g1_train(s: GateInputs, t: GateThresholds) -> GateResult:
    """GERMINATED → TRAINING: the seed is built, on the host's device and dtype, finite on the probe."""
    checks = [
        _stage_check(s, Stage.GERMINATED),
        _check("seed_built", s.seed_built, True, s.seed_built),
        _check("on_host_device", s.on_host_device, True, s.on_host_device),
        _check("on_host_dtype", s.on_host_dtype, True, s.on_host_dtype),
        _check("probe_output_finite", s.probe_finite, True, s.probe_finite),
    ]
    return _result("G1", Stage.TRAINING, checks)


def g2_blend(s: GateInputs, t: GateThresholds) -> GateResult:
    """TRAINING → BLENDING: enough epochs and a seed that is really learning (gradient ratio)."""
    checks = [
        _stage_check(s, Stage.TRAINING),
        _check("epochs_in_stage", s.epochs_in_stage, t.g2_min_epochs, s.epochs_in_stage >= t.g2_min_epochs),
    ]
    warnings: list[GateWarning] = []
    if s.grad_ratio is None:
        # Unmeasurable (no host gradients yet, or never measured): an explicit failure, never a number.
        checks.append(_check("host_gradients_absent", None, "measured", False))
    else:
        if t.ratio_mode == "relative" and s.grad_ratio_mean is not None:
            threshold = t.relative_fraction * s.grad_ratio_mean
            name = "grad_ratio_relative"
        else:
            threshold = t.ratio_threshold_for(s.topology, s.blueprint)
            name = "grad_ratio"
        checks.append(_check(name, s.grad_ratio, threshold, s.grad_ratio >= threshold))
        if threshold <= s.grad_ratio <= threshold * (1.0 + t.near_threshold_margin):
            warnings.append(
                GateWarning(
                    code="ratio_near_threshold",
                    message=(
                        f"slot {s.slot_id}: gradient ratio {s.grad_ratio:.4g} is within "
                        f"{t.near_threshold_margin:.0%} above the G2 threshold {threshold:.4g}"
                    ),
                )
            )
    checks.append(_check("seed_grad_finite", s.seed_grad_finite, True, s.seed_grad_finite))
    norm_ok = s.seed_grad_norm is not None and math.isfinite(s.seed_grad_norm) and s.seed_grad_norm <= t.max_seed_grad_norm
    checks.append(_check("seed_grad_not_exploding", s.seed_grad_norm, t.max_seed_grad_norm, norm_ok))
    return _result("G2", Stage.BLENDING, checks, warnings)


def g3_shadow(s: GateInputs, t: GateThresholds) -> GateResult:
    """BLENDING → SHADOWING: the alpha ramp is complete and the blend lasted long enough."""
    checks = [
        _stage_check(s, Stage.BLENDING),
        _check("alpha", s.alpha, t.g3_min_alpha, s.alpha >= t.g3_min_alpha),
        _check("epochs_in_stage", s.epochs_in_stage, t.g3_min_epochs, s.epochs_in_stage >= t.g3_min_epochs),
    ]
    return _result("G3", Stage.SHADOWING, checks)


def g4_probation(s: GateInputs, t: GateThresholds) -> GateResult:
    """SHADOWING → PROBATIONARY: stable at full strength and not hurting."""
    checks = [
        _stage_check(s, Stage.SHADOWING),
        _check("epochs_in_stage", s.epochs_in_stage, t.g4_min_epochs, s.epochs_in_stage >= t.g4_min_epochs),
        _check("finite_loss", not s.nonfinite_in_stage, True, not s.nonfinite_in_stage),
    ]
    if s.val_loss is None or s.val_loss_pre_blend is None:
        checks.append(_check("val_loss_vs_pre_blend", s.val_loss, s.val_loss_pre_blend, False))
    else:
        limit = s.val_loss_pre_blend * (1.0 + t.g4_val_loss_tolerance)
        checks.append(_check("val_loss_vs_pre_blend", s.val_loss, limit, s.val_loss <= limit))
    cf = s.counterfactual
    checks.append(_check("counterfactual", cf, t.g4_min_counterfactual,
                         cf is not None and cf >= t.g4_min_counterfactual, s.credit))
    return _result("G4", Stage.PROBATIONARY, checks)


def g5_fossilize(s: GateInputs, t: GateThresholds) -> GateResult:
    """PROBATIONARY → FOSSILIZED: the seed measurably helps, judged on the credit's lower bound after
    enough epochs of evidence (a lucky epoch or a wide interval does not fossilize)."""
    low = s.credit_low
    checks = [
        _stage_check(s, Stage.PROBATIONARY),
        _check("epochs_in_stage", s.epochs_in_stage, t.g5_min_epochs, s.epochs_in_stage >= t.g5_min_epochs),
        _check("credit_low", low, t.g5_min_counterfactual, low is not None and low >= t.g5_min_counterfactual,
               s.credit),
        _check("seed_healthy", s.seed_healthy, True, s.seed_healthy),
    ]
    return _result("G5", Stage.FOSSILIZED, checks)


GATES = {
    "G0": g0_germinate,
    "G1": g1_train,
    "G2": g2_blend,
    "G3": g3_shadow,
    "G4": g4_probation,
    "G5": g5_fossilize,
}


def evaluate(gate: str, inputs: GateInputs, thresholds: GateThresholds | None = None) -> GateResult:
    """Run one gate by id ("G0"…"G5")."""
    return GATES[gate](inputs, thresholds or GateThresholds())


def refused(target: Stage | None, reason: str, stage: Stage) -> GateResult:
    """A verdict for an edge that is illegal whatever the metrics say (force cannot bypass it)."""
    check = GateCheck(name="legal_transition", value=str(stage), threshold=reason, passed=False)
    return GateResult(gate=None, target=target, passed=False, checks=(check,))
