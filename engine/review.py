"""The per-epoch review of every seed: measure it (credit), decide what probation ends, judge its next gate.

After each epoch's validation the trainer asks, in this order: `measure` (each seed's statistics and,
in the stages that have one, its credit), `timeouts` (the probation culls, returned as decisions for
the trainer to apply like any other), `gates` (each live seed's next gate, logged as `gate_evaluated`,
its warnings once per seed and stage). Nothing here moves a seed itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine.config import RunConfig
from engine.credit import CreditBook
from engine.decisions import Decision
from engine.gates import GateResult, evaluate
from engine.lifecycle import COUNTERFACTUAL_STAGES, LIVE_STAGES, Stage, gate_for, next_stage, probation_limit
from engine.objective import Evaluation
from engine.seedbank import SeedBank
from engine.slot import SeedSlot
from engine.telemetry import events as ev


class EpochReview:
    """Reviews the slots of one host every epoch (see the module docstring)."""

    def __init__(self, config: RunConfig, slots: Mapping[str, SeedSlot], credit: CreditBook, bank: SeedBank,
                 emit: Callable[..., Any]) -> None:
        self.config, self.slots, self.credit, self.bank, self.emit = config, slots, credit, bank, emit
        self.warned: set[tuple[str | None, str]] = set()  # (seed, warning + stage) already said

    def measure(self, val: Evaluation, healthy: bool) -> None:
        """Record the epoch's validation on every slot; measure the credit of seeds that have one."""
        val_loss, val_acc = val.loss, val.accuracy
        for slot in self.slots.values():
            m = slot.metrics
            # A seed moved before any validation (e.g. forced while paused at the start) has no
            # baseline yet: its first measurement in the stage becomes the baseline.
            if slot.seed is not None:
                if m.accuracy_at_stage_start is None:
                    m.accuracy_at_stage_start = val_acc
                if m.val_loss_pre_blend is None and slot.stage in COUNTERFACTUAL_STAGES:
                    m.val_loss_pre_blend = val_loss
                if m.accuracy_at_blend_start is None and slot.stage in COUNTERFACTUAL_STAGES:
                    m.accuracy_at_blend_start = val_acc
            m.val_loss, m.val_accuracy = val_loss, val_acc
            if not healthy:
                m.nonfinite_in_stage = True
            if slot.seed is not None and slot.stage in COUNTERFACTUAL_STAGES:
                self.credit.measure(slot, val.correct)

    def timeouts(self) -> list[Decision]:
        """The probation culls due now: credit ≤ 0 even at the top of its interval, or time is up
        and G5 still fails."""
        cfg = self.config
        limit = probation_limit(cfg.epochs, cfg.lifecycle.probation_min_epochs, cfg.lifecycle.probation_fraction)
        culls = []
        for sid, slot in self.slots.items():
            if slot.stage is not Stage.PROBATIONARY:
                continue
            m = slot.metrics
            if m.credit_high is not None and m.credit_high <= 0:
                # Early cull only when even the optimistic end of the interval says it does not help.
                culls.append(Decision.cull(sid, "timeout", f"credit ≤ 0 during probation: {m.counterfactual:+.2f} "
                                           f"[{m.credit_low:+.2f}, {m.credit_high:+.2f}] points ({m.credit_method}), "
                                           "even its upper bound"))
            elif slot.epochs_in_stage >= limit:
                g5 = evaluate("G5", slot.gate_inputs(), cfg.lifecycle.gates)
                if not g5.passed:
                    culls.append(Decision.cull(sid, "timeout", f"probation timed out after {limit} epochs: {g5.reason}"))
        return culls

    def gates(self) -> dict[str, GateResult]:
        """Each live seed's next gate, evaluated and logged (the autopilot acts on these)."""
        results: dict[str, GateResult] = {}
        for sid, slot in self.slots.items():
            target = next_stage(slot.stage)
            if slot.stage not in LIVE_STAGES or target is None:
                continue
            result = evaluate(gate_for(slot.stage, target), slot.gate_inputs(), self.config.lifecycle.gates)
            results[sid] = result
            self.bank.log_gate(sid, result)
            for warning in result.warnings:
                key = (slot.seed_id, warning.code + str(slot.stage))
                if key not in self.warned:  # once per seed and stage, not every epoch
                    self.warned.add(key)
                    self.emit(ev.WarningEvent, slot=sid, code=warning.code, message=warning.message)
        return results
