"""Every structural change as data: a typed `Decision`, applied by one function, answered by one `Outcome`.

An operator's command, the autopilot's choice, a gate-driven advance, a probation timeout and a
governor cull are all the same thing here: a move (one of the operator's own command models, so a
decision can be logged, compared, sent to another rank or replayed as it is), who caused it, and why.
`apply_decision` is the only way a decision reaches the seed bank, and its `match` is the only place
that knows which bank move each command is. Torch-free itself; the bank it drives holds the torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from engine.commands import AdvanceCommand, CullCommand, ForceAdvanceCommand, FossilizeCommand, GerminateCommand
from engine.telemetry.events import Cause

if TYPE_CHECKING:  # the bank holds torch; this module's users do not need it to build decisions
    from engine.seedbank import SeedBank

Move = Union[GerminateCommand, AdvanceCommand, ForceAdvanceCommand, FossilizeCommand, CullCommand]
MOVES: tuple[type, ...] = (GerminateCommand, AdvanceCommand, ForceAdvanceCommand, FossilizeCommand, CullCommand)


@dataclass(frozen=True, slots=True)
class Decision:
    """One structural change: `move` (a command model), its `cause` as the log records it
    ("operator", "autopilot", "gate", "timeout", "governor") and its `reason` in words."""

    move: Move
    cause: Cause
    reason: str = ""

    @property
    def action(self) -> str:
        """The move's wire name: "germinate", "advance", "force_advance", "fossilize" or "cull"."""
        return self.move.command

    @property
    def slot(self) -> str:
        return self.move.slot

    @property
    def blueprint(self) -> str | None:
        return self.move.blueprint if isinstance(self.move, GerminateCommand) else None

    @classmethod
    def germinate(cls, slot: str, blueprint: str, cause: Cause, reason: str = "") -> Decision:
        return cls(GerminateCommand(slot=slot, blueprint=blueprint), cause, reason)

    @classmethod
    def advance(cls, slot: str, cause: Cause, reason: str = "") -> Decision:
        return cls(AdvanceCommand(slot=slot), cause, reason)

    @classmethod
    def fossilize(cls, slot: str, cause: Cause, reason: str = "") -> Decision:
        return cls(FossilizeCommand(slot=slot), cause, reason)

    @classmethod
    def cull(cls, slot: str, cause: Cause, reason: str) -> Decision:
        return cls(CullCommand(slot=slot), cause, reason)

    @classmethod
    def from_operator(cls, move: Move) -> Decision:
        """An operator's command as a decision (a cull keeps the operator's own reason)."""
        return cls(move, "operator", move.reason if isinstance(move, CullCommand) else "")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a decision or a command: applied, or refused with the reason (the engine's
    words, as the operator sees them)."""

    applied: bool
    reason: str = ""

    @classmethod
    def done(cls) -> Outcome:
        return cls(True)

    @classmethod
    def refused(cls, reason: str) -> Outcome:
        return cls(False, reason)


def apply_decision(bank: SeedBank, decision: Decision, follow: bool = False) -> Outcome:
    """Apply one decision through the seed bank (gates, lifecycle table, optimizers, events).

    `follow`: a decision rank 0 already applied, applied again on another rank of a distributed
    run. Its gate was judged there; here it is not judged again (an advance passes as it did on rank
    0), so a follower whose own numbers drifted still makes exactly the leader's move.
    """
    move, cause = decision.move, decision.cause
    if bank.slot(move.slot) is None:
        return Outcome.refused(f"unknown slot {move.slot!r}; this host's slots are {', '.join(bank.host.slots)}")
    match move:
        case GerminateCommand(slot=slot, blueprint=blueprint):
            result = bank.germinate(slot, blueprint, cause)
        case AdvanceCommand(slot=slot):
            result = bank.advance(slot, follow, cause)
        case ForceAdvanceCommand(slot=slot):
            result = bank.advance(slot, True, cause)
        case FossilizeCommand(slot=slot):
            result = bank.fossilize(slot, follow, cause)
        case CullCommand(slot=slot):
            check = bank.cull(slot, decision.reason or move.reason, cause)
            return Outcome(check.allowed, check.reason)
        case _:  # pragma: no cover - Move is closed; a new move must be given its bank call above
            raise TypeError(f"not a structural move: {move!r}")
    return Outcome(result.applied, "" if result.applied else result.reason)
