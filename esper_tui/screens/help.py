"""The keys, explained. Built from the dashboard's own bindings so it can never drift from them."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    """Lists (key, what it does) pairs; any of Escape, q or ? closes it."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        super().__init__(classes="dialog")
        self.keys = keys

    def compose(self) -> ComposeResult:
        lines = ["esper-tui keys", ""]
        lines += [f"  {key:<14} {what}" for key, what in self.keys]
        lines += ["", "  ctrl+p         command palette (every action by name)", "", "Escape closes this help."]
        with VerticalScroll(id="dialog"):
            yield Static("\n".join(lines), id="help-text", markup=False)
