"""The engine crashed: its traceback, in full, and how to get out. The log stays on disk intact.

What it shows comes from outside (the run_failed event, or the dead process's stderr, which no
reader has cleaned): every line is shown terminal-safe and never as markup.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from engine.telemetry.safe_text import safe_text


class CrashScreen(Screen[None]):
    """Shows what failed (the run_failed event, or the process's stderr when it died without one)."""

    BINDINGS = [Binding("q", "app.quit_now", "Quit"), Binding("escape", "app.pop_screen", "Back to the dashboard")]

    def __init__(self, title: str, traceback: str, run_dir: str | None) -> None:
        super().__init__(id="crash")
        self.title_text = safe_text(title)
        self.traceback = safe_text(traceback, multiline=True)
        self.run_dir = run_dir

    def compose(self) -> ComposeResult:
        yield Static(f"CRASHED  {self.title_text}", id="crash-title", markup=False)
        where = f"The run log is intact: {self.run_dir}/events.jsonl" if self.run_dir else ""
        yield Static(where, id="crash-where", markup=False)
        with VerticalScroll(id="crash-body"):
            yield Static(self.traceback or "(no traceback was recorded)", id="crash-traceback", markup=False)
        yield Footer()
