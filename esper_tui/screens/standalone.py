"""A small app of one screen, shown before (or instead of) the dashboard, in the dashboard's themes.

The run picker (`esper-tui attach` without a path) and the "could not start" message run as their own
short-lived apps: neither has a run to follow yet. They share the dashboard's stylesheet and themes
so that `--theme` looks the same everywhere.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from textual.app import App
from textual.screen import Screen

from themes import DEFAULT_THEME, STYLESHEETS, THEMES, VARIABLE_DEFAULTS

T = TypeVar("T")


class StandaloneApp(App[T], Generic[T]):
    """Shows `screen` (which dismisses with the app's result) in theme `theme`, then exits."""

    CSS_PATH = STYLESHEETS
    TITLE = "esper-tui"
    ENABLE_COMMAND_PALETTE = False

    def __init__(self, screen: Screen[T], *, theme: str = DEFAULT_THEME) -> None:
        super().__init__()
        self._first = screen
        self._initial_theme = theme

    def get_theme_variable_defaults(self) -> dict[str, str]:
        # The stylesheet names the dashboard's own variables ($stage-*): give them values (see EsperApp).
        return VARIABLE_DEFAULTS

    def on_mount(self) -> None:
        for theme in THEMES.values():
            self.register_theme(theme)
        self.theme = self._initial_theme if self._initial_theme in THEMES else DEFAULT_THEME
        self.push_screen(self._first, self.exit)  # the screen's answer is the app's result


__all__ = ["StandaloneApp"]
