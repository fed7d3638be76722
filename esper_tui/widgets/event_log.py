"""The event log panel: the reducer's log lines, newest at the bottom, with a substring filter.

Appends only the lines newer than the last one written (tracked by the lines' number `n`); rewrites
everything only when the filter, the theme or the state object changes. Matching and formatting are plain functions.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.content import Content
from textual.widget import Widget
from textual.widgets import RichLog

from esper_tui.state import LOG_LINES, LogLine, RunState

# Level → theme variable of its colour (resolved when written; RichLog holds Rich text).
LEVEL_VARIABLES = {"info": None, "command": "accent", "warning": "warning", "error": "error"}


def line_matches(line: LogLine, needle: str) -> bool:
    """Case-insensitive substring match over the line's slot, kind and text; "" matches all."""
    if not needle:
        return True
    needle = needle.lower()
    return any(needle in field.lower() for field in (line.slot or "", line.kind, line.text))


def lines_after(log: Iterable[LogLine], last_n: int) -> list[LogLine]:
    """The lines numbered above `last_n`, oldest first (walks back from the newest only)."""
    newer: list[LogLine] = []
    for line in reversed(log):  # type: ignore[call-overload]
        if line.n <= last_n:
            break
        newer.append(line)
    newer.reverse()
    return newer


def line_prefix(line: LogLine) -> str:
    """"e12 #345" (epoch and seq) for an event's line; "" for a line about the log itself."""
    return "" if line.seq is None else f"e{line.epoch} #{line.seq}"


def format_line(line: LogLine) -> str:
    """"e12 #345 block1: TRAINING -> BLENDING (gate) G2 passed", or "line 4 skipped: …"."""
    prefix = line_prefix(line)
    return f"{prefix} {line.text}" if prefix else line.text


class EventLog(Widget):
    """A bounded, filterable log. `set_filter(text)` shows only lines whose slot/kind/text match."""

    DEFAULT_CSS = """
    EventLog { height: 1fr; }
    EventLog RichLog { height: 1fr; }
    """

    def __init__(self, *, max_lines: int = LOG_LINES, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.border_title = "events"
        self.max_lines = max_lines
        self._filter = ""
        self._state: RunState | None = None
        self._last_n = 0
        self._shown: list[str] = []  # plain text of the lines written, bounded like the RichLog
        self._styles: dict[str, Style] = {}
        self._log: RichLog | None = None
        self._width = -1

    def compose(self) -> ComposeResult:
        yield RichLog(max_lines=self.max_lines, min_width=20, wrap=True, markup=False, highlight=False, auto_scroll=True)

    def on_mount(self) -> None:
        self._log = self.query_one(RichLog)
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._rebuild())
        self._rebuild()

    def on_resize(self) -> None:
        # RichLog keeps lines wrapped at the width they were written at: rewrap when that changes.
        if self.size.width != self._width:
            self._width = self.size.width
            self._rebuild()

    @property
    def filter(self) -> str:
        return self._filter

    @property
    def lines(self) -> list[str]:
        """The plain text of the lines now in the log, oldest first."""
        return list(self._shown)

    def set_filter(self, text: str) -> None:
        """Show only lines whose slot, kind or text contains `text` (any case); "" shows all."""
        text = text.strip()
        if text == self._filter:
            return
        self._filter = text
        # Content, not str: a string title is read as markup, and a typed "[/x]" would crash the app.
        self.border_title = Content(f"events (filter: {text})") if text else "events"
        self._rebuild()

    def show(self, state: RunState, selected: str | None = None) -> None:
        """Append the lines new since the last call (or rebuild, if this is a different state)."""
        if state is not self._state or state.logged < self._last_n:
            self._state = state
            self._rebuild()
            return
        self._write(lines_after(state.log, self._last_n))

    def _rebuild(self) -> None:
        if self._log is None:
            return
        self._log.clear()
        self._shown.clear()
        self._last_n = 0
        self._styles = self._level_styles()
        if self._state is not None:
            self._write(list(self._state.log))

    def _write(self, lines: list[LogLine]) -> None:
        if self._log is None or not lines:
            return
        self._last_n = lines[-1].n
        for line in lines:
            if not line_matches(line, self._filter):
                continue
            text = format_line(line)
            prefix = len(line_prefix(line))
            rich = Text(text, style=self._styles.get(line.level, ""))
            rich.stylize("dim", 0, prefix)
            self._log.write(rich)
            self._shown.append(text)
        if len(self._shown) > self.max_lines:
            del self._shown[: len(self._shown) - self.max_lines]

    def _level_styles(self) -> dict[str, Style]:
        variables = self.app.theme_variables
        styles: dict[str, Style] = {}
        for level, variable in LEVEL_VARIABLES.items():
            colour = variables.get(variable) if variable else None
            try:
                styles[level] = Style(color=colour, bold=level == "error") if colour else Style()
            except Exception:  # a theme value Rich cannot read (e.g. "auto 87%"): leave it plain
                styles[level] = Style()
        return styles
