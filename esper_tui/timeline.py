"""The replay's timeline, decided (pure; `widgets/timeline.py` draws it): one line across the screen, the whole run from epoch 1 to its last, with a
mark where a seed was germinated, fossilized or culled, a move was forced or the governor rolled
back, and the play position.

`marks_of(events)` and `timeline_text(...)` decide; no Textual here. Marks are
characters, not colours, so the line reads without colour; where two fall in one column the rarer,
more telling one wins (a rollback over a forced move over a cull over a fossil over a germination).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


# mark → (glyph, priority: higher wins a shared column)
GLYPHS: dict[str, tuple[str, int]] = {
    "germinated": ("+", 1), "fossilized": ("◆", 2), "culled": ("✕", 3), "forced": ("!", 4), "rollback": ("↺", 5),
}
LEGEND = "+ germinated  ◆ fossilized  ✕ culled  ! forced  ↺ rollback  ▮ now"
POSITION, TRACK = "▮", "·"


@dataclass(frozen=True, slots=True)
class Mark:
    epoch: int
    kind: str  # a key of GLYPHS


def marks_of(events: Iterable) -> tuple[Mark, ...]:
    """The lifecycle marks of a log's events, in order."""
    marks = []
    for e in events:
        if e.kind == "stage_changed":
            target = str(e.to_stage)
            if getattr(e, "forced", False):
                marks.append(Mark(e.epoch, "forced"))
            elif target == "GERMINATED":
                marks.append(Mark(e.epoch, "germinated"))
            elif target == "FOSSILIZED":
                marks.append(Mark(e.epoch, "fossilized"))
            elif target == "CULLED":
                marks.append(Mark(e.epoch, "culled"))
        elif e.kind == "governor_rollback":
            marks.append(Mark(e.epoch, "rollback"))
    return tuple(marks)


def column(epoch: int, last: int, width: int) -> int:
    """The column (0 … width-1) of `epoch` on a line of `width` for a run of `last` epochs."""
    if last <= 1 or width <= 1:
        return 0
    return min(width - 1, max(0, round((min(max(epoch, 1), last) - 1) * (width - 1) / (last - 1))))


def timeline_text(marks: Iterable[Mark], last_epoch: int, position: int, width: int) -> str:
    """The timeline as `width` characters: the track, the marks, the play position (epoch `position`)."""
    width = max(1, width)
    cells = [TRACK] * width
    rank = [0] * width
    for mark in marks:
        glyph, priority = GLYPHS[mark.kind]
        i = column(mark.epoch, last_epoch, width)
        if priority > rank[i]:
            cells[i], rank[i] = glyph, priority
    if position >= 1:
        cells[column(position, last_epoch, width)] = POSITION
    return "".join(cells)


__all__ = ["GLYPHS", "LEGEND", "Mark", "column", "marks_of", "timeline_text"]
