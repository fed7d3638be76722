"""The run could not start: the engine refused it before writing a single event. Say why, then quit.

Shown in place of the dashboard when the engine exits at once with its one-line "error: ..." (a
missing data set, a run directory locked or already holding a run): there is no run to watch, and a
crash screen with a traceback would be the wrong story. What it shows comes from the engine's stderr
and the command line: terminal-safe, never markup.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Static

from engine.telemetry.safe_text import safe_text

TITLE = "The run could not start"


class StartFailedScreen(Screen[None]):
    """The title, the engine's message, the command that was run, and how to leave (q)."""

    BINDINGS = [Binding("q,escape,enter", "quit_screen", "Quit")]
    DEFAULT_CSS = """
    StartFailedScreen #start-failed { padding: 1 2; height: auto; }
    StartFailedScreen #start-failed-title { color: $error; text-style: bold; margin-bottom: 1; }
    StartFailedScreen #start-failed-message { margin-bottom: 1; }
    StartFailedScreen #start-failed-command { color: $text-muted; }
    StartFailedScreen #start-failed-note { color: $text-muted; margin-bottom: 1; }
    """

    def __init__(self, message: str, command: str, note: str = "") -> None:
        super().__init__(id="start-failed-screen")
        self.message = safe_text(message, multiline=True)
        self.command = safe_text(command)
        self.note = safe_text(note)

    def compose(self) -> ComposeResult:
        with Vertical(id="start-failed"):
            yield Static(TITLE, id="start-failed-title", markup=False)
            yield Static(self.message or "(the engine gave no reason)", id="start-failed-message", markup=False)
            yield Static(f"command: {self.command}", id="start-failed-command", markup=False)
            yield Static(self.note, id="start-failed-note", markup=False)
            yield Static("press q to quit", id="start-failed-keys", markup=False)

    def action_quit_screen(self) -> None:
        self.dismiss(None)


__all__ = ["TITLE", "StartFailedScreen"]
