"""The governor's judgement: is the training loss healthy? Torch-free.

It only judges loss values it is handed; the trainer owns the snapshot it rolls back to (taken only
after a healthy epoch) and the culling that follows a rollback.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Literal

from pydantic import BaseModel, ConfigDict

Trigger = Literal["nan", "inf", "spike"]


class GovernorConfig(BaseModel):
    """When a loss counts as a blow-up, and how many rollbacks in a row end the run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    spike_factor: float = 10.0  # a spike is this many times the recent median …
    spike_margin: float = 2.0  # … and at least this much above it (nats), so noise at low loss is not one
    window: int = 50
    min_history: int = 20
    max_consecutive_rollbacks: int = 3


class LossWatch:
    """Keeps a window of recent healthy step losses and judges new ones."""

    def __init__(self, config: GovernorConfig | None = None) -> None:
        self.config = config or GovernorConfig()
        self.recent: deque[float] = deque(maxlen=self.config.window)

    def judge(self, losses: list[float]) -> tuple[Trigger, float] | None:
        """The first unhealthy loss in `losses` as (trigger, loss), or None; healthy ones are kept."""
        for loss in losses:
            if math.isnan(loss):
                return "nan", loss
            if math.isinf(loss):
                return "inf", loss
            if len(self.recent) >= self.config.min_history:
                median = statistics.median(self.recent)
                if loss > max(self.config.spike_factor * median, median + self.config.spike_margin):
                    return "spike", loss
            self.recent.append(loss)
        return None

    def reset(self) -> None:
        self.recent.clear()
