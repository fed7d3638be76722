"""A test double of the RunSource protocol: a fixed list of events, all handed over on the first drain.

Snapshot tests and Pilot tests run the real app over a recorded log with it; it never takes a
command. Lives with the tests: nothing in the product needs it.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.telemetry.events import Event
from esper_tui.sources import SendResult


class StaticSource:
    """A fixed list of events, all handed over on the first drain (snapshot tests, previews)."""

    def __init__(self, events: Iterable[Event], *, status: str | None = None, problems: Iterable[str] = ()) -> None:
        self._events = list(events)
        self._status = status
        self._problems = list(problems)
        self._drained = False

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def drain(self) -> list[Event]:
        if self._drained:
            return []
        self._drained = True
        return list(self._events)

    def send(self, command_name: str, **fields: object) -> SendResult:
        return SendResult(False, None, "static: commands are disabled")

    @property
    def can_command(self) -> bool:
        return False

    def status_hint(self) -> str | None:
        return self._status

    @property
    def problems(self) -> list[str]:
        return list(self._problems)

    @property
    def skipped_lines(self) -> int:
        return 0

    @property
    def exit_code(self) -> int | None:
        return None

    def stderr_tail(self) -> str:
        return ""
