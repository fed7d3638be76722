"""Alpha over epochs, one labelled line per slot that has a history (plotext).

Redraws only when the data changed (`alpha_series` plus the theme make the key). Line colours come
from the theme's `$plot-1`… variables; background and text follow the app theme ("auto").
"""

from __future__ import annotations

from textual.color import Color
from textual_plotext import PlotextPlot

from esper_tui.state import RunState

Series = tuple[str, tuple[int, ...], tuple[float, ...]]


def alpha_series(state: RunState, selected: str | None = None) -> list[Series]:
    """(label, epochs, alphas) per slot with history; the selected slot's label is starred."""
    series = []
    for name, view in state.slots.items():
        if not view.alpha_history:
            continue
        epochs = tuple(epoch for epoch, _ in view.alpha_history)
        alphas = tuple(alpha for _, alpha in view.alpha_history)
        series.append((f"*{name}" if name == selected else name, epochs, alphas))
    return series


class ThemedPlot(PlotextPlot):
    """A plot that knows its line colours from the theme and redraws when the theme changes."""

    def on_mount(self) -> None:
        # PlotextPlot.on_mount (which registers the plotext theme) runs too: Textual calls both.
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._theme_changed())

    def _theme_changed(self) -> None:
        self._key = None
        if self._last is not None:
            self.show(*self._last)

    def line_colours(self) -> list[tuple[int, int, int] | None]:
        variables = self.app.theme_variables
        colours: list[tuple[int, int, int] | None] = []
        for i in range(1, 7):
            try:
                colours.append(Color.parse(variables[f"plot-{i}"]).rgb)
            except Exception:  # not one of our themes, or not a plain colour: plotext's default
                colours.append(None)
        return colours

    _key: object = None
    _last: tuple[RunState, str | None] | None = None

    def show(self, state: RunState, selected: str | None = None) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class AlphaPlot(ThemedPlot):
    """Alpha in [0, 1] against epoch for every slot that has a history."""

    def show(self, state: RunState, selected: str | None = None) -> None:
        self._last = (state, selected)
        series = alpha_series(state, selected)
        key = tuple(series)
        if key == self._key:
            return
        self._key = key
        plt = self.plt
        plt.clear_figure()
        plt.title("alpha by slot")
        plt.xlabel("epoch")
        colours = self.line_colours()
        for i, (label, epochs, alphas) in enumerate(series):
            plt.plot(epochs, alphas, label=label, color=colours[i % len(colours)], marker="braille")
        plt.ylim(0, 1)
        self.refresh()

    @property
    def labels(self) -> list[str]:
        """The line labels now drawn."""
        return [label for label, _, _ in (self._key or ())]
