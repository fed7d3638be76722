"""Choose a run to attach to: `esper-tui attach` without a path, when not exactly one run is live.

Lists the runs as `esper-tui runs` does (same columns, newest first); Enter dismisses with the chosen
run's directory, q or Escape with None. Names and tasks come from run logs and directory names:
terminal-safe already (esper_tui.runs), and shown as plain text, never markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from esper_tui.runs import RunInfo, live_runs, table_rows


CURSOR, NO_CURSOR = "> ", "  "  # the chosen line reads without colour too


class RunPickerScreen(Screen[Path | None]):
    """The runs under `where`, one line each; the newest live one (else the newest) is highlighted."""

    BINDINGS = [Binding("q,escape", "cancel", "Quit")]
    DEFAULT_CSS = """
    RunPickerScreen #run-picker { padding: 0; }
    RunPickerScreen #run-picker-title { text-style: bold; margin-bottom: 1; }
    /* One line a run, cut at the edge rather than wrapped: the name, first, is what matters. */
    RunPickerScreen #run-picker-columns { color: $text-muted; text-wrap: nowrap; text-overflow: ellipsis; }
    RunPickerScreen OptionList { height: 1fr; max-height: 100%; text-wrap: nowrap; text-overflow: ellipsis; }
    RunPickerScreen #run-picker-keys { color: $text-muted; margin-top: 1; }
    """

    def __init__(self, runs: Sequence[RunInfo], where: str = "runs") -> None:
        super().__init__(id="run-picker-screen")
        self.runs = list(runs)
        self.where = where
        self._header, *self._rows = table_rows(self.runs, gap=1)  # one space apart: 80 columns hold them

    def compose(self) -> ComposeResult:
        live = len(live_runs(self.runs))
        title = (f"Attach to which run? {live} live of {len(self.runs)} under {self.where}/" if live
                 else f"No run is live under {self.where}/. Choose one to look back at:")
        with Vertical(id="run-picker"):
            yield Static(title, id="run-picker-title", markup=False)
            yield Static(NO_CURSOR + self._header, id="run-picker-columns", markup=False)
            yield OptionList(*(Option(NO_CURSOR + row, id=str(i)) for i, row in enumerate(self._rows)),
                             id="run-picker-runs", markup=False, compact=True)
            yield Static("Enter attaches   up/down choose   q or Escape quits", id="run-picker-keys", markup=False)

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.highlighted = self._first_choice()
        options.focus()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        options = event.option_list
        for i, row in enumerate(self._rows):
            mark = CURSOR if i == event.option_index else NO_CURSOR
            if options.get_option_at_index(i).prompt != mark + row:
                options.replace_option_prompt_at_index(i, mark + row)

    def _first_choice(self) -> int:
        for i, run in enumerate(self.runs):
            if run.status == "live":
                return i
        return 0

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.runs[int(event.option.id or 0)].path)

    def action_cancel(self) -> None:
        self.dismiss(None)


__all__ = ["RunPickerScreen"]
