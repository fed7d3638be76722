"""The heuristic controller (autopilot): decide(view) → decisions, each with a reason. Torch-free.

It only proposes: each `engine.decisions.Decision` is applied by the trainer through
`apply_decision` (gates, lifecycle table, log), like every other structural change. It keeps a little
state of its own (blueprint rotation, last germination) that checkpoints carry.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pydantic import BaseModel, ConfigDict, Field

from engine.decisions import Decision
from engine.gates import GateResult
from engine.lifecycle import Stage

# Stages in which a seed is still being brought up; the controller grows one seed at a time.
EARLY_STAGES = frozenset({Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING})


class ControllerConfig(BaseModel):
    """Autopilot thresholds (SPEC §5 defaults)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_epoch: int = 5
    stable_window: int = 3
    stable_rel_improvement: float = 0.03
    plateau_window: int = 3
    plateau_min_gain: float = 0.5  # accuracy points
    cull_after_epochs: int = 5
    cull_drop_points: float = 2.0
    culled_penalty_epochs: int = 20
    max_growing_seeds: int = 1
    # A seed needs ~15 epochs to be judged (3 training, 5 blending, 2 shadowing, 3–6 probation). When
    # no plateau has come by this fraction of the planned epochs, the first seed is grown anyway: on
    # noisy validation curves (mnist5k, seed 2) the plateau rule first fired at epoch 46 of 60.
    first_growth_by: float = Field(0.4, ge=0, le=1, description="fraction of planned epochs; 1 = never force")
    # Blueprints tried first, in this order (names of another topology are ignored); the rest of the
    # registry follows in registration order. The registry opens with `norm`, the weakest seed. First
    # the ones that add capacity: measured, they are the ones that pay (issue 7).
    prefer: tuple[str, ...] = ("conv_wide", "conv_light", "depthwise", "mlp", "attention", "lora")


@dataclass(frozen=True, slots=True)
class SlotView:
    """What the controller sees of one slot at the end of an epoch."""

    slot: str
    stage: Stage
    blueprint: str | None
    epochs_in_stage: int
    accuracy_at_stage_start: float | None
    fitting_blueprints: tuple[str, ...] = ()  # registered blueprints within this slot's budget
    gate: GateResult | None = None  # this epoch's verdict on the slot's next edge


@dataclass(frozen=True, slots=True)
class ControllerView:
    """The run as the controller sees it: per-epoch validation history and the slots."""

    epoch: int
    val_losses: tuple[float, ...]
    val_accuracies: tuple[float, ...]
    slots: tuple[SlotView, ...]
    blueprints: tuple[str, ...]
    planned_epochs: int | None = None


@dataclass(slots=True)
class Controller:
    """Stateful only in what it must remember between epochs; everything else comes in the view."""

    config: ControllerConfig = field(default_factory=ControllerConfig)
    rotation: int = 0
    last_germination_epoch: int | None = None
    culled_at: dict[str, int] = field(default_factory=dict)  # blueprint → epoch of its last cull
    # Why the last `decide` grew nothing, in words ("host not stable: …"); None when it germinated.
    waiting: str | None = None

    def note_culled(self, blueprint: str | None, epoch: int) -> None:
        """Remember a cull (by anyone) so the rotation avoids that blueprint for a while."""
        if blueprint:
            self.culled_at[blueprint] = epoch

    def decide(self, view: ControllerView) -> list[Decision]:
        preferred = [b for b in self.config.prefer if b in view.blueprints]
        ordered = tuple(preferred + [b for b in view.blueprints if b not in preferred])
        view = replace(view, blueprints=ordered)
        decisions = [d for s in view.slots if (d := self._manage(s, view)) is not None]
        growth = self._germination(view)
        if isinstance(growth, Decision):
            decisions.append(growth)
            self.waiting = None
        else:
            self.waiting = growth
        return decisions

    # -------------------------------------------------------------- live seeds
    def _manage(self, s: SlotView, view: ControllerView) -> Decision | None:
        if s.stage not in (Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING, Stage.SHADOWING, Stage.PROBATIONARY):
            return None
        if s.gate is not None and s.gate.passed:
            # Fossilize exactly when G5 passes: the rule and the gate are one and the same. The move is
            # the gate's doing (cause "gate"); the autopilot only chose to take it.
            why = f"{s.gate.gate} passed"
            if s.gate.target is Stage.FOSSILIZED:
                return Decision.fossilize(s.slot, "gate", why)
            return Decision.advance(s.slot, "gate", why)
        c = self.config
        if s.epochs_in_stage >= c.cull_after_epochs and s.accuracy_at_stage_start is not None and view.val_accuracies:
            drop = s.accuracy_at_stage_start - view.val_accuracies[-1]
            if drop > c.cull_drop_points:
                return Decision.cull(
                    s.slot,
                    "autopilot",
                    f"accuracy fell {drop:.2f} points since entering {s.stage} "
                    f"{s.epochs_in_stage} epochs ago (limit {c.cull_drop_points})",
                )
        return None

    # -------------------------------------------------------------- growth
    def _germination(self, view: ControllerView) -> Decision | str:
        """A germination, or why there is none yet (what the autopilot is waiting for, in words)."""
        c = self.config
        if view.epoch < c.min_epoch:
            return f"lets the host train alone until epoch {c.min_epoch} (now {view.epoch})"
        growing = [s for s in view.slots if s.stage in EARLY_STAGES]
        if len(growing) >= c.max_growing_seeds:
            # No stage in the words: the seed may move on in this very epoch, and the line stays true.
            names = ", ".join(s.slot for s in growing)
            return f"brings up one seed at a time: {names} first"
        if self.last_germination_epoch is not None and view.epoch - self.last_germination_epoch < c.plateau_window:
            return (f"germinated at epoch {self.last_germination_epoch}; grows again at epoch "
                    f"{self.last_germination_epoch + c.plateau_window} at the earliest")
        stable = host_is_stable(view.val_losses, c.stable_window, c.stable_rel_improvement)
        plateau = accuracy_plateau(view.val_accuracies, c.plateau_window, c.plateau_min_gain)
        deadline = None if view.planned_epochs is None or c.first_growth_by >= 1 else round(
            c.first_growth_by * view.planned_epochs)
        overdue = deadline is not None and self.last_germination_epoch is None and view.epoch >= deadline
        if not (stable and plateau) and not overdue:
            return self._not_yet(view, stable, deadline)
        free = [s for s in view.slots if s.stage is Stage.DORMANT]
        for s in free:
            choice = self._pick_blueprint(view, s.fitting_blueprints)
            if choice is None:
                continue
            self.last_germination_epoch = view.epoch
            if stable and plateau:
                gain = view.val_accuracies[-1] - view.val_accuracies[-1 - c.plateau_window]
                reason = (f"plateau: accuracy changed by {gain:+.2f} points over {c.plateau_window} epochs "
                          f"(a plateau is below +{c.plateau_min_gain}) and the host is stable")
            else:
                reason = (f"no plateau by epoch {deadline} ({c.first_growth_by:.0%} of {view.planned_epochs} "
                          "planned): growing now so that a seed can finish its trial in time")
            return Decision.germinate(s.slot, choice, "autopilot", reason)
        if not free:
            return "would grow now, but no slot is free"
        return "would grow now, but no blueprint fits a free slot's parameter budget"

    def _not_yet(self, view: ControllerView, stable: bool, deadline: int | None) -> str:
        """Why the host is not ready to grow: the first unmet condition, with its numbers."""
        c = self.config
        if not stable:
            window = view.val_losses[-c.stable_window - 1:]
            if len(window) < c.stable_window + 1:
                why = f"host not stable yet: needs {c.stable_window + 1} epochs of val loss (has {len(window)})"
            else:
                changes = [(after - before) / before for before, after in zip(window, window[1:]) if before > 0]
                worst = min(changes, default=0.0)
                why = (f"host not stable: val loss {100 * worst:+.1f} %/epoch, needs > "
                       f"{-100 * c.stable_rel_improvement:+.0f} % every epoch")
        else:
            window = view.val_accuracies[-c.plateau_window - 1:]
            if len(window) < c.plateau_window + 1:
                why = f"no accuracy plateau yet: needs {c.plateau_window + 1} epochs (has {len(window)})"
            else:
                gain = window[-1] - window[0]
                why = (f"accuracy still rising: {gain:+.2f} points over {c.plateau_window} epochs "
                       f"(a plateau is below +{c.plateau_min_gain})")
        if deadline is not None and self.last_germination_epoch is None:
            why += f"; grows anyway at epoch {deadline}"
        return why

    def _pick_blueprint(self, view: ControllerView, fitting: tuple[str, ...]) -> str | None:
        """Next blueprint in rotation that fits, skipping recently culled ones when possible."""
        if not fitting or not view.blueprints:
            return None
        n = len(view.blueprints)
        order = [view.blueprints[(self.rotation + i) % n] for i in range(n)]
        candidates = [b for b in order if b in fitting]
        fresh = [
            b for b in candidates
            if view.epoch - self.culled_at.get(b, -10**9) > self.config.culled_penalty_epochs
        ]
        if fresh:
            pick = fresh[0]
        elif candidates:  # everything was culled lately: take the one culled longest ago
            pick = min(candidates, key=lambda b: self.culled_at.get(b, -10**9))
        else:
            return None
        self.rotation = (view.blueprints.index(pick) + 1) % n
        return pick

    def state_dict(self) -> dict:
        return {"rotation": self.rotation, "last_germination_epoch": self.last_germination_epoch,
                "culled_at": dict(self.culled_at)}

    def load_state_dict(self, state: dict) -> None:
        self.rotation = int(state["rotation"])
        self.last_germination_epoch = state["last_germination_epoch"]
        self.culled_at = {str(k): int(v) for k, v in state["culled_at"].items()}


def host_is_stable(val_losses: tuple[float, ...] | list[float], window: int, rel: float) -> bool:
    """True when each of the last `window` epochs improved the loss by less than `rel` (relative)."""
    if len(val_losses) < window + 1:
        return False
    recent = val_losses[-window - 1:]
    for before, after in zip(recent, recent[1:]):
        if before <= 0:
            continue
        if (before - after) / before >= rel:
            return False
    return True


def accuracy_plateau(val_accuracies: tuple[float, ...] | list[float], window: int, min_gain: float) -> bool:
    """True when accuracy gained less than `min_gain` points over the last `window` epochs."""
    if len(val_accuracies) < window + 1:
        return False
    return val_accuracies[-1] - val_accuracies[-1 - window] < min_gain
