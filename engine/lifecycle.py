"""The seed lifecycle as data: the Stage enum, the one transition table, and the gate on each edge.

Torch-free and UI-free. Every stage change anywhere in the engine goes through `check_transition`,
so an illegal edge is refused with a reason (never an exception) and leaves state unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Stage(StrEnum):
    """Lifecycle stages of one slot. Values equal names, so logs carry `"BLENDING"`."""

    DORMANT = "DORMANT"
    GERMINATED = "GERMINATED"
    TRAINING = "TRAINING"
    BLENDING = "BLENDING"
    SHADOWING = "SHADOWING"
    PROBATIONARY = "PROBATIONARY"
    FOSSILIZED = "FOSSILIZED"
    CULLED = "CULLED"
    EMBARGOED = "EMBARGOED"


# The happy path, in order. `advance` moves one step along it through the edge's gate.
HAPPY_PATH: tuple[Stage, ...] = (
    Stage.DORMANT,
    Stage.GERMINATED,
    Stage.TRAINING,
    Stage.BLENDING,
    Stage.SHADOWING,
    Stage.PROBATIONARY,
    Stage.FOSSILIZED,
)

# Stages in which a seed exists and may be culled.
LIVE_STAGES: frozenset[Stage] = frozenset(HAPPY_PATH[1:-1])

# Stages in which the seed is run in the forward pass at all.
ACTIVE_STAGES: frozenset[Stage] = frozenset(
    {Stage.TRAINING, Stage.BLENDING, Stage.SHADOWING, Stage.PROBATIONARY, Stage.FOSSILIZED}
)

# The alpha a slot takes on entering a stage (BLENDING ramps up from 0; at full strength it is 1);
# stages not listed keep the alpha they had. The slot applies it; readers of the log fold it.
ENTRY_ALPHA: dict[Stage, float] = {
    Stage.BLENDING: 0.0,
    Stage.SHADOWING: 1.0,
    Stage.PROBATIONARY: 1.0,
    Stage.FOSSILIZED: 1.0,
    Stage.CULLED: 0.0,
    Stage.EMBARGOED: 0.0,
    Stage.DORMANT: 0.0,
}

# Stages with a counterfactual measurement (alpha forced to 0 for one evaluation).
COUNTERFACTUAL_STAGES: frozenset[Stage] = frozenset(
    {Stage.BLENDING, Stage.SHADOWING, Stage.PROBATIONARY}
)

TRANSITIONS: dict[Stage, frozenset[Stage]] = {
    Stage.DORMANT: frozenset({Stage.GERMINATED}),
    Stage.GERMINATED: frozenset({Stage.TRAINING, Stage.CULLED}),
    Stage.TRAINING: frozenset({Stage.BLENDING, Stage.CULLED}),
    Stage.BLENDING: frozenset({Stage.SHADOWING, Stage.CULLED}),
    Stage.SHADOWING: frozenset({Stage.PROBATIONARY, Stage.CULLED}),
    Stage.PROBATIONARY: frozenset({Stage.FOSSILIZED, Stage.CULLED}),
    Stage.FOSSILIZED: frozenset(),
    Stage.CULLED: frozenset({Stage.EMBARGOED}),
    Stage.EMBARGOED: frozenset({Stage.DORMANT}),
}

# The quality gate that guards each happy-path edge.
GATE_FOR_EDGE: dict[tuple[Stage, Stage], str] = {
    (Stage.DORMANT, Stage.GERMINATED): "G0",
    (Stage.GERMINATED, Stage.TRAINING): "G1",
    (Stage.TRAINING, Stage.BLENDING): "G2",
    (Stage.BLENDING, Stage.SHADOWING): "G3",
    (Stage.SHADOWING, Stage.PROBATIONARY): "G4",
    (Stage.PROBATIONARY, Stage.FOSSILIZED): "G5",
}


@dataclass(frozen=True, slots=True)
class TransitionCheck:
    """Whether `source → target` is a legal edge; `reason` says why not when it is refused."""

    source: Stage
    target: Stage
    allowed: bool
    reason: str = ""


def check_transition(source: Stage, target: Stage) -> TransitionCheck:
    """Check one edge against the table. Never raises for any pair of stages."""
    if target in TRANSITIONS[source]:
        return TransitionCheck(source, target, True)
    allowed = sorted(TRANSITIONS[source])
    if source is Stage.FOSSILIZED:
        why = "FOSSILIZED is terminal: the seed is part of the host now"
    elif not allowed:
        why = f"{source} has no outgoing edges"
    else:
        why = f"from {source} the only legal moves are to {', '.join(allowed)}"
    return TransitionCheck(source, target, False, f"illegal transition {source} -> {target}: {why}")


def next_stage(stage: Stage) -> Stage | None:
    """The next stage on the happy path, or None where `advance` has nowhere to go."""
    if stage in (Stage.FOSSILIZED, Stage.CULLED, Stage.EMBARGOED):
        return None
    return HAPPY_PATH[HAPPY_PATH.index(stage) + 1]


def gate_for(source: Stage, target: Stage) -> str | None:
    """The gate id guarding an edge, or None for the failure path (cull, embargo, release)."""
    return GATE_FOR_EDGE.get((source, target))


def probation_limit(planned_epochs: int, minimum: int = 5, fraction: float = 0.10) -> int:
    """Most epochs a seed may spend in PROBATIONARY: max(minimum, fraction of the planned epochs)."""
    return max(minimum, round(fraction * planned_epochs))
