"""SeedSlot: one place in a host where a seed can live, with its stage, alpha buffer and metrics.

Owns the forward semantics of each stage (SPEC §2) and the moves between stages (through the gates).
Knows nothing of optimizers, the trainer, the event log or the UI: it records what happened in
`TransitionRecord`s that the trainer drains and turns into events.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from engine import blueprints
from engine.alpha import AlphaSchedule
from engine.config import LifecycleConfig
from engine.gates import GateInputs, GateResult, evaluate, refused
from engine.isolation import blend, ste
from engine.lifecycle import (
    ACTIVE_STAGES,
    ENTRY_ALPHA,
    LIVE_STAGES,
    Stage,
    TransitionCheck,
    check_transition,
    gate_for,
    next_stage,
)
from engine.metrics import SeedMetrics

Cause = str  # "gate" | "autopilot" | "operator" | "governor" | "timeout" | "embargo"

# A tuple, not the frozenset: torch.compile (2.13) installs no guard for `enum in frozenset` on a
# module attribute, so a compiled host would keep running a stale stage's graph. With a tuple it
# guards on the stage and recompiles when it changes (tests/engine/test_compile.py).
_ACTIVE = tuple(ACTIVE_STAGES)


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """A stage change that happened, with why. The trainer turns these into `stage_changed` events."""

    slot_id: str
    seed_id: str | None
    blueprint: str | None
    source: Stage
    target: Stage
    cause: Cause
    forced: bool
    reason: str
    gate: GateResult | None = None


class SeedSlot(nn.Module):
    """A slot between two host blocks. Identity until a seed is active in it.

    `probe_shape` is a small input shape used to check a new seed (G0/G1) without real data, e.g.
    (2, C, 4, 4) for a CNN slot or (2, T, D) for a Transformer slot.
    """

    def __init__(
        self,
        slot_id: str,
        topology: str,
        dim: int,
        probe_shape: tuple[int, ...],
        config: LifecycleConfig | None = None,
    ) -> None:
        super().__init__()
        self.slot_id = slot_id
        self.topology = topology
        self.dim = dim
        self.probe_shape = tuple(probe_shape)
        self.config = config or LifecycleConfig()
        self.blend_detach = self.config.detach_for(topology)
        self.seed: nn.Module | None = None
        # A tensor buffer, not a Python float: a compiled graph reads it, so changing alpha never
        # recompiles, and it moves with the module across devices and into checkpoints.
        self.register_buffer("alpha_t", torch.zeros(()))
        self._alpha = 0.0  # host-side mirror, so reading `.alpha` never syncs with the device
        self.stage = Stage.DORMANT
        self.blueprint: str | None = None
        self.seed_id: str | None = None
        self.epochs_in_stage = 0
        self.embargo_left = 0
        self.blend_step = 0
        self.steps_per_epoch = 1
        self.seeds_created = 0
        self.metrics = SeedMetrics()
        self._schedule: AlphaSchedule | None = None
        self._pending: list[TransitionRecord] = []
        # Set by the host (`SeedBudget`): how many parameters a seed here may have. None = no limit.
        self.budget = None

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seed = self.seed
        if seed is None or self.stage not in _ACTIVE:
            return x
        if self.stage is Stage.TRAINING:
            # The seed learns from a detached copy; the output is exactly the host's.
            return ste(x, seed(x.detach()))
        seed_in = x.detach() if (self.stage is Stage.BLENDING and self.blend_detach) else x
        return blend(x, seed(seed_in), self.alpha_t)

    # ------------------------------------------------------------------ reading
    @property
    def alpha(self) -> float:
        """Current blend weight (0 until BLENDING, ramps to 1, 1 from SHADOWING on)."""
        return self._alpha

    @property
    def is_live(self) -> bool:
        """A seed is in the slot and still on trial (GERMINATED … PROBATIONARY)."""
        return self.stage in LIVE_STAGES

    def seed_parameters(self) -> list[nn.Parameter]:
        return [] if self.seed is None else list(self.seed.parameters())

    def seed_param_count(self) -> int:
        return sum(p.numel() for p in self.seed_parameters())

    def take_transitions(self) -> list[TransitionRecord]:
        """Stage changes since the last call (the trainer drains these into events)."""
        out, self._pending = self._pending, []
        return out

    @property
    def blend_progress(self) -> tuple[int, int] | None:
        """(steps done, steps planned) of the alpha ramp while BLENDING, else None."""
        if self.stage is not Stage.BLENDING or self._schedule is None:
            return None
        return self.blend_step, self._schedule.steps

    # ------------------------------------------------------------------ moves
    def germinate(self, blueprint: str, *, cause: Cause = "operator") -> GateResult:
        """Build a seed from `blueprint` into this slot through G0 (DORMANT → GERMINATED)."""
        registered = blueprints.is_registered(self.topology, blueprint)
        can_build = registered and self.stage is Stage.DORMANT
        module, shape_out, n_params = None, None, None
        if can_build:
            module = self._build(blueprint)
            n_params = sum(p.numel() for p in module.parameters())
            shape_out = self._probe(module)[0]
        inputs = GateInputs(
            slot_id=self.slot_id,
            topology=self.topology,
            stage=self.stage,
            blueprint=blueprint,
            embargoed=self.stage is Stage.EMBARGOED,
            blueprint_registered=registered,
            probe_shape_in=self.probe_shape if can_build else None,
            probe_shape_out=shape_out,
            seed_params=n_params,
            param_budget=None if self.budget is None else self.budget.for_slot(self),
        )
        result = evaluate("G0", inputs, self.config.gates)
        if result.passed:
            self.seeds_created += 1
            self.seed = module
            self.blueprint = blueprint
            self.seed_id = f"{self.slot_id}#{self.seeds_created}"
            self.metrics = SeedMetrics()  # a new seed starts with fresh statistics (EMA reset)
            self._move(Stage.GERMINATED, cause, reason=f"germinated {blueprint}", gate=result)
        return result

    def advance(self, force: bool = False, *, cause: Cause = "operator") -> GateResult:
        """Move to the next stage through its gate; with `force`, past a failing gate (recorded).

        Force never makes an illegal edge legal: from DORMANT, FOSSILIZED, CULLED or EMBARGOED there is
        nothing to advance to, and the returned result says so.
        """
        target = next_stage(self.stage)
        if self.stage is Stage.DORMANT:
            return refused(Stage.GERMINATED, "germinate(blueprint) is the way out of DORMANT", self.stage)
        if target is None:
            return refused(None, f"{self.stage} has no next stage to advance to", self.stage)
        gate = gate_for(self.stage, target)
        assert gate is not None  # every happy-path edge has a gate
        result = evaluate(gate, self.gate_inputs(), self.config.gates)
        if result.passed:
            self._move(target, cause, reason=result.reason, gate=result)
        elif force:
            result = result.model_copy(update={"forced": True})
            self._move(target, cause, forced=True, reason=f"forced past {result.reason}", gate=result)
        return result

    def fossilize(self, force: bool = False, *, cause: Cause = "operator") -> GateResult:
        """PROBATIONARY → FOSSILIZED through G5 (refused from any other stage)."""
        if self.stage is not Stage.PROBATIONARY:
            return refused(Stage.FOSSILIZED, check_transition(self.stage, Stage.FOSSILIZED).reason, self.stage)
        return self.advance(force, cause=cause)

    def cull(self, reason: str, *, cause: Cause = "operator") -> TransitionCheck:
        """Remove the live seed (→ CULLED). Refused, with the reason, when there is no live seed."""
        check = check_transition(self.stage, Stage.CULLED)
        if check.allowed:
            self._move(Stage.CULLED, cause, reason=reason or "culled")
        return check

    def end_epoch(self) -> list[TransitionRecord]:
        """Count one finished epoch; run the embargo clock (CULLED → EMBARGOED → DORMANT)."""
        self.epochs_in_stage += 1
        first_new = len(self._pending)
        if self.stage is Stage.CULLED:
            self._move(Stage.EMBARGOED, "embargo", reason=f"embargoed for {self.config.embargo_epochs} epochs")
            self.embargo_left = self.config.embargo_epochs
            if self.embargo_left == 0:
                self._move(Stage.DORMANT, "embargo", reason="no embargo configured")
        elif self.stage is Stage.EMBARGOED:
            self.embargo_left -= 1
            if self.embargo_left <= 0:
                self._move(Stage.DORMANT, "embargo", reason="embargo over")
        return self._pending[first_new:]

    def on_optimizer_step(self) -> None:
        """Advance the alpha ramp by one optimizer step while BLENDING (no device sync)."""
        if self.stage is Stage.BLENDING and self._schedule is not None and self.blend_step < self._schedule.steps:
            self.blend_step += 1
            self._set_alpha(self._schedule.value(self.blend_step))

    @contextmanager
    def counterfactual(self) -> Iterator[None]:
        """Evaluate as if this seed's alpha were 0 (other slots untouched); restored even on error."""
        saved = self.alpha_t.clone()
        self.alpha_t.zero_()
        try:
            yield
        finally:
            self.alpha_t.copy_(saved)

    def graft_fossil(self, blueprint: str) -> None:
        """Build a seed from `blueprint` straight into FOSSILIZED at full strength (alpha 1).

        Not a lifecycle edge: construction of a fixed architecture (a grown run's final network
        trained from scratch). Raises ValueError for an unknown blueprint or an occupied slot.
        """
        if self.stage is not Stage.DORMANT or not blueprints.is_registered(self.topology, blueprint):
            raise ValueError(f"cannot build {blueprint!r} into slot {self.slot_id} ({self.stage})")
        self.seeds_created += 1
        self.seed, self.blueprint, self.seed_id = self._build(blueprint), blueprint, f"{self.slot_id}#{self.seeds_created}"
        self.stage = Stage.FOSSILIZED
        self._set_alpha(1.0)

    def clear(self) -> None:
        """Empty this slot outright (DORMANT, no seed, alpha 0) without a lifecycle move or a record.

        Not a lifecycle edge: only for building a counterfactual copy of a host (the shadow twin of
        `engine.credit`), where the seed must never have existed.
        """
        self.seed = None
        self.stage = Stage.DORMANT
        self.blueprint = self.seed_id = None
        self._schedule = None
        self.blend_step = 0
        self._set_alpha(0.0)
        self.metrics = SeedMetrics()
        self._pending = []

    # ------------------------------------------------------------------ gate inputs
    def gate_inputs(self) -> GateInputs:
        """Snapshot of this slot for the gates (plain Python values)."""
        m = self.metrics
        built = self.seed is not None
        on_device = on_dtype = finite = False
        if built and self.stage is Stage.GERMINATED:
            ref = self.alpha_t
            params = self.seed_parameters()
            on_device = all(p.device == ref.device for p in params)
            on_dtype = all(p.dtype == ref.dtype for p in params)
            finite = self._probe(self.seed)[1]
        return GateInputs(
            slot_id=self.slot_id,
            topology=self.topology,
            stage=self.stage,
            epochs_in_stage=self.epochs_in_stage,
            blueprint=self.blueprint,
            seed_built=built,
            on_host_device=on_device,
            on_host_dtype=on_dtype,
            probe_finite=finite,
            grad_ratio=m.grad_ratio.value,
            grad_ratio_mean=m.grad_ratio.mean,
            seed_grad_finite=m.seed_grad_finite,
            seed_grad_norm=m.seed_grad_norm,
            alpha=self._alpha,
            nonfinite_in_stage=m.nonfinite_in_stage,
            val_loss=m.val_loss,
            val_loss_pre_blend=m.val_loss_pre_blend,
            counterfactual=m.counterfactual,
            credit_low=m.credit_low,
            credit_high=m.credit_high,
            credit_method=m.credit_method,
            seed_healthy=m.seed_healthy,
        )

    # ------------------------------------------------------------------ checkpoint state
    def export_state(self) -> dict:
        """Lifecycle state as plain values; the seed's weights travel in the host's state_dict."""
        return {
            "stage": str(self.stage),
            "blueprint": self.blueprint,
            "seed_id": self.seed_id,
            "epochs_in_stage": self.epochs_in_stage,
            "embargo_left": self.embargo_left,
            "blend_step": self.blend_step,
            "blend_steps": None if self._schedule is None else self._schedule.steps,
            "alpha": self._alpha,
            "seeds_created": self.seeds_created,
            "steps_per_epoch": self.steps_per_epoch,
            "metrics": self.metrics.to_dict(),
        }

    def import_state(self, state: dict) -> None:
        """Restore exported state, rebuilding the seed module (no gates: this restores, not decides).

        Call before `host.load_state_dict(...)` so the seed's parameters exist to receive weights.
        """
        self.stage = Stage(state["stage"])
        self.blueprint = state["blueprint"]
        self.seed_id = state["seed_id"]
        self.epochs_in_stage = int(state["epochs_in_stage"])
        self.embargo_left = int(state["embargo_left"])
        self.blend_step = int(state["blend_step"])
        self.seeds_created = int(state["seeds_created"])
        self.steps_per_epoch = int(state["steps_per_epoch"])
        self.metrics = SeedMetrics.from_dict(state["metrics"])
        self._schedule = None
        if state["blend_steps"] is not None:
            self._schedule = AlphaSchedule(
                int(state["blend_steps"]), self.config.alpha_curve, self.config.alpha_temperature
            )
        self.seed = None
        if self.blueprint is not None and self.stage in LIVE_STAGES | {Stage.FOSSILIZED}:
            self.seed = self._build(self.blueprint)
        self._set_alpha(float(state["alpha"]))
        self._pending = []

    # ------------------------------------------------------------------ internals
    def _build(self, blueprint: str) -> nn.Module:
        """A fresh seed module from `blueprint`, on this slot's device and dtype (channels_last for CNNs)."""
        ref = self.alpha_t
        module = blueprints.create(self.topology, blueprint, self.dim).to(device=ref.device, dtype=ref.dtype)
        return module.to(memory_format=torch.channels_last) if self.topology == "cnn" else module

    def _probe(self, module: nn.Module) -> tuple[tuple[int, ...] | None, bool]:
        """Run `module` once on a fixed random probe: (output shape, all finite). Never raises."""
        ref = self.alpha_t
        gen = torch.Generator().manual_seed(0)  # a private stream: probing never shifts training RNG
        probe = torch.randn(self.probe_shape, generator=gen).to(device=ref.device, dtype=ref.dtype)
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                out = module(probe)
            return tuple(out.shape), bool(torch.isfinite(out).all())
        except Exception:  # a broken blueprint fails its gate; it must not kill training
            return None, False
        finally:
            module.train(was_training)

    def _set_alpha(self, value: float) -> None:
        self._alpha = value
        self.alpha_t.fill_(value)

    def _move(
        self,
        target: Stage,
        cause: Cause,
        *,
        forced: bool = False,
        reason: str = "",
        gate: GateResult | None = None,
    ) -> None:
        source = self.stage
        check = check_transition(source, target)
        if not check.allowed:  # every caller checks first; this guards the table against a bug
            raise RuntimeError(check.reason)
        record = TransitionRecord(
            self.slot_id, self.seed_id, self.blueprint, source, target, cause, forced, reason, gate
        )
        self.stage = target
        self.epochs_in_stage = 0
        m = self.metrics
        m.nonfinite_in_stage = False
        m.accuracy_at_stage_start = m.val_accuracy
        if target is Stage.BLENDING:
            # Alpha starts at 0 whatever the route into BLENDING (gate, autopilot or operator).
            self._schedule = AlphaSchedule(
                self.config.blend_steps_for(self.steps_per_epoch),
                self.config.alpha_curve,
                self.config.alpha_temperature,
            )
            self.blend_step = 0
            m.val_loss_pre_blend = m.val_loss
            m.accuracy_at_blend_start = m.val_accuracy
        elif target in (Stage.SHADOWING, Stage.PROBATIONARY, Stage.FOSSILIZED):
            self._schedule = None
        elif target is Stage.CULLED:
            self.seed = None  # drop the parameters; the trainer drops the seed's optimizer
            self._schedule = None
        elif target is Stage.DORMANT:
            self.blueprint = None
            self.seed_id = None
        if target in ENTRY_ALPHA:
            self._set_alpha(ENTRY_ALPHA[target])
        self._pending.append(record)
