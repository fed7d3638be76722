"""`esper-tui compare RUN_A RUN_B`: two runs side by side (a fork against its source, typically).

`Comparison.of(a, b)` (pure: two run logs in, numbers and moves out) gives each run's per-epoch val
accuracy and loss, its lifecycle moves, whether one forked from the other and at which epoch, and the
first epoch where their journeys part. `as_text` is the plain report (`--text`); the screen
(`screens/compare.py`) overlays the curves and lists the moves. Strings from the logs are made safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.telemetry.describe import pct
from engine.telemetry.runlog import LogRead
from engine.telemetry.safe_text import safe_text
from esper_tui.summary import cell


@dataclass(frozen=True, slots=True)
class Move:
    """One stage change, as a comparison lists it."""

    epoch: int
    slot: str
    target: str
    cause: str
    blueprint: str | None

    def words(self) -> str:
        seed = f" {safe_text(self.blueprint)}" if self.blueprint else ""
        return f"e{self.epoch} {safe_text(self.slot)} → {self.target}{seed} ({safe_text(self.cause)})"


@dataclass(frozen=True, slots=True)
class RunSide:
    """What one run brings to a comparison."""

    name: str
    run_id: str | None
    epochs: tuple[int, ...]
    val_accuracy: tuple[float | None, ...]
    val_loss: tuple[float | None, ...]
    moves: tuple[Move, ...]
    forked_from: dict[str, Any] | None

    @classmethod
    def of(cls, read: LogRead, name: str) -> RunSide:
        done = [e for e in read.events if e.kind == "epoch_completed"]
        starts = [e for e in read.events if e.kind == "run_started"]
        forked = next((s.forked_from for s in reversed(starts) if s.forked_from), None)
        moves = tuple(Move(e.epoch, e.slot, str(e.to_stage), e.cause, e.blueprint)
                      for e in read.events if e.kind == "stage_changed")
        return cls(name, starts[0].run_id if starts else None, tuple(e.epoch for e in done),
                   tuple(e.val_accuracy for e in done), tuple(e.val_loss for e in done), moves, forked)

    def best(self) -> tuple[int, float] | None:
        points = [(e, a) for e, a in zip(self.epochs, self.val_accuracy) if a is not None]
        return max(points, key=lambda p: p[1]) if points else None

    def final(self) -> tuple[int, float] | None:
        points = [(e, a) for e, a in zip(self.epochs, self.val_accuracy) if a is not None]
        return points[-1] if points else None


@dataclass(frozen=True, slots=True)
class Comparison:
    """Two runs: their sides, how they are related, where they part."""

    a: RunSide
    b: RunSide

    @classmethod
    def of(cls, a: LogRead, b: LogRead, names: tuple[str, str] = ("A", "B")) -> Comparison:
        return cls(RunSide.of(a, names[0]), RunSide.of(b, names[1]))

    def relation(self) -> str | None:
        """"B forked from A at epoch 4", or None when neither names the other."""
        for child, parent in ((self.b, self.a), (self.a, self.b)):
            source = child.forked_from or {}
            if parent.run_id is not None and source.get("run_id") == parent.run_id:
                return f"{child.name} forked from {parent.name} at epoch {source.get('epoch')}"
        return None

    def parted_at(self) -> int | None:
        """The first epoch at which the two journeys differ (a move, or val accuracy), or None."""
        moves_a = {e: [m for m in self.a.moves if m.epoch == e] for e in set(m.epoch for m in self.a.moves)}
        moves_b = {e: [m for m in self.b.moves if m.epoch == e] for e in set(m.epoch for m in self.b.moves)}
        acc_a, acc_b = dict(zip(self.a.epochs, self.a.val_accuracy)), dict(zip(self.b.epochs, self.b.val_accuracy))
        for epoch in sorted(set(acc_a) | set(acc_b) | set(moves_a) | set(moves_b)):
            if moves_a.get(epoch, []) != moves_b.get(epoch, []) or acc_a.get(epoch) != acc_b.get(epoch):
                return epoch
        return None


def as_text(c: Comparison) -> str:
    """The comparison as plain text: relation, where they part, accuracy, and each run's moves."""
    lines = [f"# {safe_text(c.a.name)} vs {safe_text(c.b.name)}", ""]
    relation = c.relation()
    if relation:
        lines.append(f"- {safe_text(relation)}")
    parted = c.parted_at()
    lines.append(f"- the journeys part at epoch {parted}" if parted is not None else "- the journeys are identical")
    for side in (c.a, c.b):
        final, best = side.final(), side.best()
        said = (f"final val accuracy {pct(final[1])} (epoch {final[0]}), best {pct(best[1])} (epoch {best[0]})"
                if final and best else "no epoch completed")
        lines.append(f"- {safe_text(side.name)}: {said}; {len(side.moves)} lifecycle moves")
    lines += ["", "| epoch | " + " | ".join(cell(s.name) for s in (c.a, c.b)) + " |", "|---|---|---|"]
    epochs = sorted({m.epoch for m in c.a.moves} | {m.epoch for m in c.b.moves})
    for epoch in epochs:
        cols = ["; ".join(m.words() for m in side.moves if m.epoch == epoch) or "—" for side in (c.a, c.b)]
        lines.append(f"| {epoch} | {cell(cols[0])} | {cell(cols[1])} |")
    return "\n".join(lines) + "\n"


def run_name(path: Path) -> str:
    """A run's short name for a comparison: its directory's name."""
    return (path.parent if path.name.endswith(".jsonl") else path).name or str(path)


__all__ = ["Comparison", "Move", "RunSide", "as_text", "run_name"]
