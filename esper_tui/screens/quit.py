"""Quitting a live run: stop it gracefully, or detach and leave it training. Dismisses with the choice."""

from __future__ import annotations

from typing import Literal

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label

Choice = Literal["stop", "detach", "cancel"]


class QuitScreen(ModalScreen[Choice]):
    """`s` stops the run (checkpoint, close the log), `d` detaches, Escape stays."""

    BINDINGS = [
        Binding("s", "choose('stop')", "Stop the run"),
        Binding("d", "choose('detach')", "Detach"),
        Binding("escape,c", "choose('cancel')", "Cancel"),
    ]

    def __init__(self, run_dir: str) -> None:
        super().__init__(classes="dialog")
        self.run_dir = run_dir

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Quit the dashboard. What should happen to the run?", id="question")
            yield Label(  # a path may hold "[": plain text
                f"Detach leaves it training; come back with: esper-tui attach {self.run_dir}", id="hint",
                markup=False,
            )
            with Horizontal(id="buttons"):
                yield Button("Stop the run (s)", variant="error", id="stop")
                yield Button("Detach (d)", variant="primary", id="detach")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#detach", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)  # type: ignore[arg-type]

    def action_choose(self, choice: Choice) -> None:
        self.dismiss(choice)
