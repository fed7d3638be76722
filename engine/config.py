"""Typed run configuration (pydantic). Torch-free, so the dashboard can read and show it.

Presets are plain functions returning configs; nothing is wired by magic.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from engine.alpha import Curve
from engine.controller import ControllerConfig
from engine.gates import GateThresholds
from engine.governor import GovernorConfig

# Whether a BLENDING seed sees a detached copy of its input (review §1.5). CNN: detach, so the host
# backbone is not pulled around by a half-blended seed. Transformer: no detach, so the residual stream
# co-adapts with the seed, which measured better for attention/LoRA-style seeds in the original system.
DEFAULT_BLEND_DETACH: dict[str, bool] = {"cnn": True, "transformer": False}


class LifecycleConfig(BaseModel):
    """How seeds move through their lifecycle: alpha ramp, isolation policy, embargo, gates."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha_curve: Curve = "cosine"
    alpha_temperature: float = Field(0.1, ge=0.0, description="sigmoid curve only; 0 = instant step")
    blend_epochs: float = Field(5.0, gt=0, description="ramp length in epochs when blend_steps is unset")
    blend_steps: int | None = Field(None, ge=1, description="ramp length in optimizer steps (overrides)")
    blend_detach: bool | None = Field(
        None, description="detach the seed input while BLENDING; None = the topology's default"
    )
    embargo_epochs: int = Field(5, ge=0)
    probation_min_epochs: int = Field(5, ge=1)
    probation_fraction: float = Field(0.10, ge=0.0)
    gates: GateThresholds = Field(default_factory=GateThresholds)

    def detach_for(self, topology: str) -> bool:
        """The isolation policy in force for a topology (explicit setting, else documented default)."""
        if self.blend_detach is not None:
            return self.blend_detach
        return DEFAULT_BLEND_DETACH[topology]

    def blend_steps_for(self, steps_per_epoch: int) -> int:
        """Ramp length in optimizer steps: the explicit setting, else `blend_epochs` worth of steps."""
        if self.blend_steps is not None:
            return self.blend_steps
        return max(1, round(self.blend_epochs * max(1, steps_per_epoch)))


class OptimConfig(BaseModel):
    """The optimizer: a param group for the host, one per live seed (`seed_lr` defaults to `lr`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-2, gt=0)
    seed_lr: float | None = Field(None, gt=0)
    training_lr_scale: float = Field(
        0.1, gt=0, le=1,
        description="a seed's learning rate while GERMINATED/TRAINING, as a fraction of seed_lr. Behind the "
        "straight-through estimator the seed never sees its own effect, so at the host's step its delta "
        "overshoots: blending it in then cost up to 23 accuracy points at alpha 0.1 on digits (measured)",
    )
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, description="sgd only")


class RankDrill(BaseModel):
    """One rank of a distributed run misbehaves at the start of an epoch, to rehearse what the others do.

    exit: the process ends at once (as if killed); hang: it stops answering (sleeps forever);
    perturb: it nudges one weight, so its replica silently differs (the checksums must catch it);
    skew: from then on it adds 1.0 to the validation loss of its own shard (a local number that
    disagrees: decisions must still be one, made on the reduced numbers).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["exit", "hang", "perturb", "skew"]
    rank: int = Field(1, ge=0)
    epoch: int = Field(1, ge=1)


class FaultConfig(BaseModel):
    """Fault drills: make the engine meet a NaN loss or a crash on purpose (to rehearse recovery)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    nan_loss_at_step: int | None = None
    crash_at_epoch: int | None = None
    rank_drill: RankDrill | None = Field(None, description="distributed runs: one rank misbehaves on purpose")


CreditMethod = Literal["shadow_twin", "ablation_bn", "ablation"]


class CreditConfig(BaseModel):
    """How a live seed's credit (accuracy points it adds) is estimated (engine.credit, README)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: CreditMethod = Field(
        "shadow_twin",
        description="shadow_twin: vs a copy of the host trained without the seed since it began blending "
        "(the default: measured closest to the real seedless twin); ablation_bn: alpha forced to 0, "
        "BatchNorm statistics re-estimated for both arms; ablation: alpha forced to 0 (removal damage)",
    )
    window: int = Field(5, ge=1, description="epochs of per-example differences averaged into one estimate "
                        "(5: measured to tighten the interval enough to decide within probation)")
    confidence: float = Field(0.90, gt=0, lt=1, description="two-sided level of the bootstrap interval")
    bootstrap_samples: int = Field(1000, ge=50, description="paired bootstrap resamples of validation examples")
    bn_batches: int = Field(8, ge=1, description="training batches used to re-estimate BatchNorm statistics")
    compare: bool = Field(
        False, description="also run the other estimators each epoch and log them (credit_compare): "
        "diagnostics for calibration; decisions use `method` only"
    )


# The built-in tasks, named once: the options are checked against these without importing torch
# (`esper-tui train --task bogus` exits 2 before anything starts); engine.tasks.TASKS builds each.
TaskName = Literal["digits", "mnist5k", "text", "cifar10", "textfile"]
TASK_NAMES: tuple[str, ...] = get_args(TaskName)


class RunConfig(BaseModel):
    """Everything one run needs. Written whole into the `run_started` event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: TaskName = Field("digits", description="the built-in task (engine.tasks builds it)")
    data_dir: str | None = None
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(64, ge=1)
    seed: int = 0
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    bf16: bool = Field(False, description="bf16 autocast (CUDA, or CPU where supported)")
    threads: int = Field(
        0, ge=0, description="CPU threads for torch; 0 = half the cores (1 on a 2-core box, leaving one for the UI)"
    )
    compile: bool = Field(False, description="torch.compile the host (recompiles on each graft)")
    grad_stats_every: int = Field(10, ge=1, description="measure gradient ratios every N steps")
    sync_every: int = Field(
        50, ge=1, description="read step losses back from the device every N steps (one sync)"
    )
    collective_timeout_s: float = Field(
        300.0, gt=0, description="distributed runs: how long a rank waits for the others in any collective "
        "before the run fails (a rank that died or hangs ends the run within this time)"
    )
    checkpoint_every: int = Field(5, ge=0, description="epochs between checkpoints; 0 = only at the end")
    checkpoint_keep: int = Field(
        20, ge=0, description="epoch checkpoints kept for forks (RUN_DIR/checkpoints, the newest N; hard links "
        "to files already written); 0 = none"
    )
    autopilot: bool = True
    min_epoch_seconds: float = Field(
        0.0, ge=0, description="pace: make every epoch last at least this long (a watchable live demo); "
        "commands are still applied at once while it waits"
    )
    host: dict[str, int | float] = Field(default_factory=dict, description="overrides of the task's host size")
    fossils: dict[str, str] = Field(
        default_factory=dict,
        description="slot → blueprint built into the host from epoch 0 at full strength, as plain host "
        "(a grown run's final network trained from scratch: `experiment` arm 'fixed')",
    )
    optim: OptimConfig = Field(default_factory=OptimConfig)
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
    credit: CreditConfig = Field(default_factory=CreditConfig)
    controller: ControllerConfig = Field(default_factory=ControllerConfig)
    governor: GovernorConfig = Field(default_factory=GovernorConfig)
    faults: FaultConfig = Field(default_factory=FaultConfig)


def default_config(**overrides: object) -> RunConfig:
    """The built-in default task: digits on a deliberately small CNN."""
    return RunConfig(**overrides)


def quick_config(**overrides: object) -> RunConfig:
    """A short run whose seed lives a whole life in seconds (tests, demos): shorter waits and ramps."""
    base: dict[str, object] = dict(
        epochs=24,
        lifecycle=LifecycleConfig(blend_epochs=2.0, embargo_epochs=2),
        controller=ControllerConfig(min_epoch=2, plateau_window=2, stable_window=2, plateau_min_gain=2.0,
                                    stable_rel_improvement=0.2),
    )
    base.update(overrides)
    return RunConfig(**base)


def text_config(**overrides: object) -> RunConfig:
    """The Transformer host on the built-in text task (Python's own reference documentation)."""
    # 40 epochs and a plateau of < 1.5 token-accuracy points over 3 epochs: the LM is still learning at
    # 1 point an epoch until ~epoch 16, so the default plateau rule germinated at epoch 22 and no seed
    # finished its life within 30 epochs (measured).
    base: dict[str, object] = dict(task="text", epochs=40, batch_size=32, optim=OptimConfig(lr=1e-3),
                                   controller=ControllerConfig(plateau_min_gain=1.5))
    base.update(overrides)
    return RunConfig(**base)


PRESETS = {"default": default_config, "quick": quick_config, "text": text_config}
