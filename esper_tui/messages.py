"""App-level Textual messages: what screens ask of the app, and what its workers report back.

Screens post these (messages up) and the app handles each in one place; the app pushes what screens
need as attributes (attributes down). Knows no screen, no widget and no source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from esper_tui.sources import SendResult


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """One operator command as the operator asked it: the engine's command name, its fields, and
    the words the answer's toast quotes ("germinate block2 norm")."""

    command: str
    fields: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def asked(self) -> str:
        """How the operator's request reads: the description, or the command and its values."""
        return self.description or " ".join([self.command, *(str(v) for v in self.fields.values())])

    @property
    def slot(self) -> str | None:
        """The slot the command is about (None for run-wide commands such as pause)."""
        slot = self.fields.get("slot")
        return slot if isinstance(slot, str) else None


class CommandRequested(Message):
    """A screen asks the app to send `request` to the engine. The app decides whether it can go
    (a replay or a finished run cannot be steered) and sends it off the UI thread."""

    def __init__(self, command: str, fields: dict[str, Any] | None = None, description: str = "") -> None:
        super().__init__()
        self.request = CommandRequest(command, dict(fields or {}), description)


class CommandSent(Message):
    """The sender worker's report: the socket's immediate answer to `request` (received, with the
    command's id, or why not). The engine's decision comes later, in the log."""

    def __init__(self, request: CommandRequest, result: SendResult) -> None:
        super().__init__()
        self.request = request
        self.result = result


class SeekRequested(Message):
    """The operator asked a replay to jump to the end of `epoch`."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch


__all__ = ["CommandRequest", "CommandRequested", "CommandSent", "SeekRequested"]
