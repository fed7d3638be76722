"""The dashboard's look: Textual themes built from the palettes, and the stylesheets that use them.

Colours live only in `palettes.py`; the `.tcss` files here refer to them as `$variables`.
Knows nothing about the run, the widgets' logic, or the engine.
"""

from __future__ import annotations

from pathlib import Path

from textual.theme import Theme

from themes.palettes import DARK, HIGH_CONTRAST, LIGHT, PALETTES, Palette, theme_variables, to_theme

HERE = Path(__file__).resolve().parent

THEMES: dict[str, Theme] = {palette.name: to_theme(palette) for palette in PALETTES}
THEME_NAMES: tuple[str, ...] = tuple(THEMES)  # the order `t` cycles through
DEFAULT_THEME = DARK.name

STYLESHEETS: list[Path] = [HERE / "app.tcss"]

# Fallbacks for the custom variables ($stage-*, $plot-*, $panel-border), so the stylesheet still parses when a
# built-in Textual theme is picked from the command palette. Return these from
# `App.get_theme_variable_defaults`.
VARIABLE_DEFAULTS: dict[str, str] = {
    name: value for name, value in theme_variables(DARK).items() if name != "text-muted"
}


def next_theme(current: str) -> str:
    """The theme after `current` in `THEME_NAMES` (the first one when `current` is not ours)."""
    if current not in THEME_NAMES:
        return THEME_NAMES[0]
    return THEME_NAMES[(THEME_NAMES.index(current) + 1) % len(THEME_NAMES)]


__all__ = [
    "DARK", "DEFAULT_THEME", "HIGH_CONTRAST", "LIGHT", "PALETTES", "Palette", "STYLESHEETS", "THEMES",
    "THEME_NAMES", "VARIABLE_DEFAULTS", "next_theme",
]
