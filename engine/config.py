"""Typed run configuration (pydantic). Torch-free, so the dashboard can read and show it.

Presets are plain functions returning configs; nothing is wired by magic.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from engine.alpha import Curve
from engine.gates import GateThresholds

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
