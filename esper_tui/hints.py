"""Why nothing happens, in words: each live seed's next step and what the autopilot waits for.

Pure functions of the reduced state (no Textual, no clock). The engine decides; these only read what
it logged: the last gate verdict of each slot (checks with their comparators and sentences) and the
autopilot's own `autopilot_waiting` reason.
"""

from __future__ import annotations

import math

from engine.gates import GateCheck
from engine.lifecycle import LIVE_STAGES, Stage, gate_for, next_stage
from esper_tui.state import CRASHED, FINISHED, STOPPED, RunState, SlotView

_KEYS_FOR = {Stage.FOSSILIZED: "f fossilizes it"}


def _eta_epochs(check: GateCheck, view: SlotView) -> int | None:
    """Epochs until a failing check can pass at the present pace, where that can be told."""
    value, threshold = check.value, check.threshold
    if not isinstance(value, (int, float)) or not isinstance(threshold, (int, float)) or isinstance(value, bool):
        return None
    if check.name == "epochs_in_stage":
        return max(1, int(threshold) - int(value))
    if check.name == "alpha":
        points = [a for _, a in list(view.alpha_history)[-3:]]
        if len(points) >= 2 and points[-1] > points[0]:
            per_epoch = (points[-1] - points[0]) / (len(points) - 1)
            return max(1, math.ceil((threshold - value) / per_epoch))
    return None


def next_step(view: SlotView, autopilot: bool | None) -> str:
    """What stands between a slot's seed and its next stage, e.g.
    "G3 needs alpha ≥ 0.99 (now 0.35, about 2 epochs)" or "G5 passed: f fossilizes it (autopilot off)".
    Empty for a slot without a live seed."""
    stage = view.stage
    target = next_stage(stage)
    if stage not in LIVE_STAGES or target is None:
        return "part of the host" if stage is Stage.FOSSILIZED else ""
    gate = view.gate
    wanted = gate_for(stage, target)
    if gate is None or gate.gate != wanted:
        return f"{wanted} is checked at the end of the epoch"
    if gate.passed:
        if autopilot:
            return f"{wanted} passed: the autopilot moves it on"
        return f"{wanted} passed: {_KEYS_FOR.get(target, 'a advances it')} (autopilot off)"
    failing = [c for c in gate.checks if not c.passed and c.name != "stage"]
    if not failing:
        return f"{wanted} failed"
    first = failing[0]
    sentence = first.sentence
    eta = _eta_epochs(first, view)
    if eta is not None and sentence.endswith(")"):
        sentence = f"{sentence[:-1]}, about {eta} epoch{'' if eta == 1 else 's'})"
    more = f" (+{len(failing) - 1} more)" if len(failing) > 1 else ""
    return f"{wanted} {sentence}{more}"


def autopilot_line(state: RunState) -> str:
    """The autopilot in one line: off, on and waiting for what, or on with nothing to wait for."""
    if state.autopilot is None:
        return "autopilot: —"
    if state.status in (CRASHED, FINISHED, STOPPED):
        return f"autopilot {'on' if state.autopilot else 'off'}: the run has ended"
    if not state.autopilot:
        return "autopilot off: only you move seeds (o turns it on)"
    if state.autopilot_waiting:
        return f"autopilot waits: {state.autopilot_waiting}"
    return "autopilot on"
