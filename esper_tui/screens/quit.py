"""Quitting a live run: stop it gracefully, or detach and leave it training. Dismisses with the choice.

The dialog says what each choice does to the run, and gives the whole command that comes back to it
(`esper-tui attach` with the run directory's real path, wrapped, never cut): after a detach it is
all the operator has to find the run again.
"""

from __future__ import annotations

import os
from typing import Literal

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from engine.telemetry.safe_text import safe_text

Choice = Literal["stop", "detach", "cancel"]
PLACEHOLDER = "RUN_DIR"  # what the app passes when it has no run directory to name


def attach_command(run_dir: str) -> str:
    """`esper-tui attach` with the run directory as an absolute path (it works from any directory)."""
    where = run_dir if run_dir == PLACEHOLDER else os.path.abspath(run_dir)
    return f"esper-tui attach {safe_text(where)}"


class QuitScreen(ModalScreen[Choice]):
    """`s` stops the run (checkpoint, close the log), `d` detaches, Escape stays."""

    BINDINGS = [
        Binding("s", "choose('stop')", "Stop the run"),
        Binding("d", "choose('detach')", "Detach"),
        Binding("escape,c", "choose('cancel')", "Cancel"),
    ]
    DEFAULT_CSS = """
    QuitScreen #attach-command { text-style: bold; margin-bottom: 1; padding-left: 3; }
    QuitScreen .choice { margin-bottom: 0; }
    """

    def __init__(self, run_dir: str) -> None:
        super().__init__(classes="dialog")
        self.run_dir = run_dir
        self.command = attach_command(run_dir)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Quit the dashboard. What should happen to the run?", id="question")
            yield Static("s  Stop: the run saves a checkpoint and ends.", classes="choice", markup=False)
            yield Static("d  Detach: the dashboard closes, the run goes on.", classes="choice", markup=False)
            yield Static("   Watch it again with:", classes="choice", markup=False)
            # A Static wraps (a long path folds onto the next line); a path may hold "[": plain text.
            yield Static(self.command, id="attach-command", markup=False)
            with Horizontal(id="buttons"):
                yield Button("Stop (s)", variant="error", id="stop")
                yield Button("Detach (d)", variant="primary", id="detach")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#detach", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)  # type: ignore[arg-type]

    def action_choose(self, choice: Choice) -> None:
        self.dismiss(choice)
