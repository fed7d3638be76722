"""The typed event stream: every event the engine tells the world, as frozen pydantic models.

This is the only contract between the engine and whatever watches it (run log, dashboard, progress
lines). Torch-free and UI-free: it knows stages and gate results, never tensors, widgets or files.
Kinds are a closed set (a discriminated union on `kind`); fields may be added, never renamed.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, model_validator

from engine.gates import GateCheck, GateResult, GateWarning
from engine.lifecycle import Stage

SCHEMA_VERSION = 1


def _finite_or_none(value: Any) -> Any:
    # JSON has no NaN/Inf. A non-finite measurement becomes None *in the model*, so what a reader
    # gets back from the log equals what the writer held (pydantic would write null and then refuse
    # to read null into a plain float).
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


Metric = Annotated[float | None, BeforeValidator(_finite_or_none)]
"""A measured float: finite, or None when not measured or not finite (shown as "—")."""

# Settings the engine controls (learning rate, alpha) are finite by construction; a non-finite one is
# a bug in the writer, so it fails loudly at emit time instead of silently logging null.
Finite = Annotated[float, Field(allow_inf_nan=False)]



def _named_nonfinite(value: Any) -> Any:
    return repr(value) if isinstance(value, float) and not math.isfinite(value) else value


def _check_for_json(check: GateCheck) -> GateCheck:
    # A gate check may measure inf/nan (an exploding gradient norm). Its value type also admits
    # strings, so the event keeps it by name ("inf", "nan"): the gate panel shows what was measured,
    # and the JSON stays valid and reads back equal.
    value, threshold = _named_nonfinite(check.value), _named_nonfinite(check.threshold)
    if value is check.value and threshold is check.threshold:
        return check
    return check.model_copy(update={"value": value, "threshold": threshold})


def _checks_for_json(checks: tuple[GateCheck, ...]) -> tuple[GateCheck, ...]:
    return tuple(_check_for_json(c) for c in checks)


def _result_for_json(result: GateResult | None) -> GateResult | None:
    if result is None:
        return None
    checks = _checks_for_json(result.checks)
    if all(a is b for a, b in zip(checks, result.checks)):
        return result
    return result.model_copy(update={"checks": checks})


Checks = Annotated[tuple[GateCheck, ...], AfterValidator(_checks_for_json)]
"""Gate checks with any non-finite value or threshold written by name ("inf", "nan")."""

LoggedGateResult = Annotated[GateResult | None, AfterValidator(_result_for_json)]
"""A gate result whose checks are JSON-safe (see `Checks`)."""

Cause = Literal["gate", "autopilot", "operator", "governor", "timeout", "embargo"]
"""Why a stage changed: its gate passed, the controller, the operator, the governor, a probation
timeout, or the end of an embargo."""


class _Frozen(BaseModel):
    # extra="ignore": a newer writer may add fields and an older reader still reads the line.
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class EventBase(_Frozen):
    """Fields every event carries.

    `seq` increases strictly through a run's log (a resumed run continues the numbering). `time` is
    Unix seconds. `epoch` is the epoch in progress, 1-based (0 before the first epoch starts), and
    `epoch_completed` carries the number of the epoch it completes. `step` is the global optimizer
    step count.
    """

    kind: str
    seq: int
    time: float
    epoch: int
    step: int


class SlotReport(_Frozen):
    """One slot's state at the end of an epoch (inside `epoch_completed`).

    `blending_delta` (accuracy now minus at blend start) is confounded by host drift: display only,
    no decision reads it. `counterfactual` is the seed's credit: the accuracy points it adds, as
    estimated by `credit_method`, with the interval [`credit_low`, `credit_high`] (engine.credit).
    """

    slot: str
    stage: Stage
    blueprint: str | None = None
    seed_id: str | None = None
    epochs_in_stage: int = 0
    alpha: Finite = 0.0
    grad_ratio: Metric = None
    grad_ratio_threshold: Metric = None
    counterfactual: Metric = None
    credit_low: Metric = None
    credit_high: Metric = None
    credit_method: str | None = None
    credit_compare: dict[str, tuple[float, float, float]] | None = Field(
        None, description="with credit.compare: every other estimator's (value, low, high), diagnostics only"
    )
    blending_delta: Metric = None
    params: int = 0


class RunStarted(EventBase):
    """A run (or a resumed run) began: everything needed to interpret the rest of the log."""

    kind: Literal["run_started"] = "run_started"
    schema_version: int = SCHEMA_VERSION
    run_id: str
    config: dict[str, Any]
    task: str
    topology: str
    slots: tuple[str, ...]
    isolation: dict[str, Any] = Field(description='e.g. {"blend_detach": true, "source": "default"}')
    device: str
    versions: dict[str, str] = Field(default_factory=dict)
    planned_epochs: int
    blueprints: dict[str, str] = Field(
        default_factory=dict, description="blueprint name → one-line description, for the topology"
    )
    resumed: bool = False
    host_params: int | None = Field(default=None, description="parameters of the seedless host (the budget's base)")
    resumed_from_epoch: int | None = Field(
        default=None,
        description="on a resume: the checkpoint's epoch; events of later epochs written before this "
        "run_started are superseded (the run went on from here), and readers drop them",
    )
    resumed_after_seq: int | None = Field(
        default=None,
        description="on a resume: the last seq written before the checkpoint was captured; the events "
        "with resumed_after_seq < seq < this run_started's seq are superseded (runlog.supersessions)",
    )
    forked_from: dict[str, Any] | None = Field(
        None, description="a fork: the source run's run_id, run_dir and the epoch it started from"
    )
    distributed: dict[str, Any] | None = Field(
        default=None,
        description="under torchrun: world_size, backend (gloo, nccl), the rank writing this log (0) and "
        "the collective timeout in seconds; None for a single process",
    )


class StepMetrics(EventBase):
    """Strided training metrics. A non-finite loss is logged as None with `finite=False`."""

    kind: Literal["step_metrics"] = "step_metrics"
    loss: Metric
    finite: bool = True
    lr: Finite
    samples_per_s: Metric = None

    @model_validator(mode="before")
    @classmethod
    def _flag_nonfinite_loss(cls, data: Any) -> Any:
        # Keep the fact that the loss blew up, since the value itself cannot travel through JSON.
        if isinstance(data, dict) and "finite" not in data:
            loss = data.get("loss")
            if isinstance(loss, float) and not math.isfinite(loss):
                return {**data, "finite": False}
        return data


class EpochCompleted(EventBase):
    """End-of-epoch metrics (accuracies in percentage points) and every slot's report."""

    kind: Literal["epoch_completed"] = "epoch_completed"
    train_loss: Metric = None
    train_accuracy: Metric = None
    val_loss: Metric = None
    val_accuracy: Metric = None
    epoch_time_s: Metric = None
    credit_time_s: Metric = Field(None, description="of epoch_time_s, the time spent estimating credit")
    samples_per_s: Metric = None
    slots: tuple[SlotReport, ...] = ()


class SeedGerminated(EventBase):
    """A seed was built into a slot from a blueprint."""

    kind: Literal["seed_germinated"] = "seed_germinated"
    slot: str
    seed_id: str
    blueprint: str
    params: int


class StageChanged(EventBase):
    """A slot moved from one stage to another. In JSON the stages are under "from" and "to".

    `gate` is the gate result that decided it; on a forced transition it is the failing result.
    """

    model_config = ConfigDict(serialize_by_alias=True)

    kind: Literal["stage_changed"] = "stage_changed"
    slot: str
    seed_id: str | None = None
    blueprint: str | None = None
    from_stage: Stage = Field(alias="from")
    to_stage: Stage = Field(alias="to")
    cause: Cause
    forced: bool = False
    reason: str = ""
    gate: LoggedGateResult = None


class GateEvaluated(EventBase):
    """A gate was evaluated for a slot, with every check. `gate` is None only for an illegal edge."""

    kind: Literal["gate_evaluated"] = "gate_evaluated"
    slot: str
    gate: str | None
    target: Stage | None = None
    passed: bool
    checks: Checks = ()
    warnings: tuple[GateWarning, ...] = ()
    forced: bool = False

    @classmethod
    def fields_from(cls, result: GateResult) -> dict[str, Any]:
        """The fields of this event taken from a gate result (for `Emitter.emit`)."""
        return {
            "gate": result.gate,
            "target": result.target,
            "passed": result.passed,
            "checks": result.checks,
            "warnings": result.warnings,
            "forced": result.forced,
        }

    @classmethod
    def from_result(cls, result: GateResult, **base: Any) -> GateEvaluated:
        """Build the event from a gate result; `base` gives slot, seq, time, epoch and step."""
        return cls(**cls.fields_from(result), **base)

    def as_result(self) -> GateResult:
        """The gate result this event records (for the dashboard's gate panel)."""
        return GateResult(
            gate=self.gate,
            target=self.target,
            passed=self.passed,
            checks=self.checks,
            warnings=self.warnings,
            forced=self.forced,
        )


class WarningEvent(EventBase):
    """Something the operator should know (e.g. code `ratio_near_threshold`); never fatal."""

    kind: Literal["warning"] = "warning"
    slot: str | None = None
    code: str
    message: str


class ControllerDecision(EventBase):
    """The autopilot decided something (germinate, advance, cull, fossilize …), with its reason."""

    kind: Literal["controller_decision"] = "controller_decision"
    action: str
    slot: str | None = None
    blueprint: str | None = None
    reason: str = ""


class AutopilotWaiting(EventBase):
    """What the autopilot waits for before it grows a seed, in words with the numbers; written when
    that changes (not every epoch). `reason` None: it is not waiting (it has just germinated)."""

    kind: Literal["autopilot_waiting"] = "autopilot_waiting"
    reason: str | None = None


class CommandReceived(EventBase):
    """An operator command arrived and was queued for the next safe point."""

    kind: Literal["command_received"] = "command_received"
    command_id: str
    command: dict[str, Any]


class CommandApplied(EventBase):
    """An operator command took effect (its one answer; `detail` says what it did)."""

    kind: Literal["command_applied"] = "command_applied"
    command_id: str
    command: dict[str, Any]
    detail: str = ""


class CommandRejected(EventBase):
    """An operator command was refused (its one answer), with the reason."""

    kind: Literal["command_rejected"] = "command_rejected"
    command_id: str
    command: dict[str, Any]
    reason: str


class GovernorRollback(EventBase):
    """The loss blew up; model and optimizers were restored to a snapshot and live seeds culled."""

    kind: Literal["governor_rollback"] = "governor_rollback"
    trigger: Literal["nan", "inf", "spike"]
    loss: Metric = None
    restored_epoch: int
    seeds_culled: tuple[str, ...] = ()


class CheckpointSaved(EventBase):
    """A checkpoint was written."""

    kind: Literal["checkpoint_saved"] = "checkpoint_saved"
    path: str


class RunPaused(EventBase):
    """Training paused (operator command, or other cause)."""

    kind: Literal["run_paused"] = "run_paused"
    cause: str = "operator"


class RunResumed(EventBase):
    """Training resumed after a pause."""

    kind: Literal["run_resumed"] = "run_resumed"
    cause: str = "operator"


class RanksVerified(EventBase):
    """Distributed runs: the ranks compared checksums of their parameters and lifecycle state.

    After every structural change, at the start and at the end. `checksums` is by rank, each
    {"params": …, "lifecycle": …}; `diverged` the ranks that differ from rank 0 (then the run stops
    with run_failed naming them).
    """

    kind: Literal["ranks_verified"] = "ranks_verified"
    in_sync: bool
    checksums: tuple[dict[str, str], ...]
    diverged: tuple[int, ...] = ()
    trigger: str


class RunFinished(EventBase):
    """The run ended normally: `status` is "completed" or "stopped"; `final` holds final metrics."""

    kind: Literal["run_finished"] = "run_finished"
    status: str
    final: dict[str, Metric] = Field(default_factory=dict)


class RunFailed(EventBase):
    """The engine crashed; the log ends here with the error and its traceback."""

    kind: Literal["run_failed"] = "run_failed"
    error_type: str
    message: str
    traceback: str = ""


EVENT_CLASSES: tuple[type[EventBase], ...] = (
    RunStarted,
    StepMetrics,
    EpochCompleted,
    SeedGerminated,
    StageChanged,
    GateEvaluated,
    WarningEvent,
    ControllerDecision,
    AutopilotWaiting,
    CommandReceived,
    CommandApplied,
    CommandRejected,
    GovernorRollback,
    CheckpointSaved,
    RunPaused,
    RunResumed,
    RanksVerified,
    RunFinished,
    RunFailed,
)

Event = Annotated[Union[EVENT_CLASSES], Field(discriminator="kind")]  # type: ignore[valid-type]
"""Any event; validate with `EVENT_ADAPTER` (dispatches on `kind`, rejects unknown kinds)."""

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

EVENT_TYPES: dict[str, type[EventBase]] = {cls.model_fields["kind"].default: cls for cls in EVENT_CLASSES}
"""kind → event class."""

EVENT_KINDS: tuple[str, ...] = tuple(EVENT_TYPES)
"""Every kind name, in contract order."""

# High-rate metrics are batched; everything else changes what a watcher must show, so the sink is
# flushed at once (SPEC §7: flushed on every lifecycle event).
LIFECYCLE_KINDS: frozenset[str] = frozenset(EVENT_KINDS) - {"step_metrics", "epoch_completed"}
"""Kinds that force a flush of the run log when emitted."""
