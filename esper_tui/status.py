"""Typed values the app pushes down to the dashboard: the run's status as the header shows it, and
what the operator can do right now.

Statuses used to travel as strings with a payload ("REPLAY x2") that widgets took apart with
`split`; here the word and its detail are separate fields, built from typed properties, never parsed.
Plain data: no Textual, no source.
"""

from __future__ import annotations

from dataclasses import dataclass

REPLAY = "REPLAY"


@dataclass(frozen=True, slots=True)
class Status:
    """A header status: `word` (LIVE, PAUSED, REPLAY, CRASHED …: it picks the style) and, for a
    replay, `detail` ("x2", "MAX", "PAUSED", "END", "(replay)"). `str()` is the text the header shows."""

    word: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.word} {self.detail}" if self.detail else self.word

    @classmethod
    def replay(cls, *, playing: bool, speed: float, at_end: bool, ending: str | None = None) -> Status:
        """A replay's status: paused, as fast as possible (speed 0) or at "x<speed>"; at the end, how
        the run ended (`ending`: "FINISHED (replay)", styled as that word), else "REPLAY END"."""
        if at_end:
            return cls(ending, "(replay)") if ending else cls(REPLAY, "END")
        if not playing:
            return cls(REPLAY, "PAUSED")
        return cls(REPLAY, "MAX" if speed == 0 else f"x{speed:g}")


@dataclass(frozen=True, slots=True)
class Pending:
    """An operator command not answered yet, as asked; `sent`: the socket took it (the engine decides now)."""

    asked: str
    sent: bool


@dataclass(frozen=True, slots=True)
class Controls:
    """What the dashboard may offer now, decided by the app from its source and the run's status.

    `steerable`: a command could reach a live engine (so a confirm or a picker is worth asking);
    `replaying`: the replay keys work; `pending`: the operator's commands not answered yet, oldest
    first, for the "awaiting the engine" line.
    """

    steerable: bool = False
    replaying: bool = False
    pending: tuple[Pending, ...] = ()


__all__ = ["REPLAY", "Controls", "Pending", "Status"]
