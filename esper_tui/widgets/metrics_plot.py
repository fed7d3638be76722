"""How well the host learns, over the same recent epochs as the alpha plot (plotext): train and val
accuracy in %, or for a language model bits per character (loss / ln 2), on one axis.

One quantity per plot, so there is one y axis and nothing to decode; the lines differ by marker
(val: braille, train: dots) as well as colour, and the legend sits in the title, off the curves.
`metric_series` (pure) picks the points, skipping unmeasured ones; the widget redraws only when they
change. Line colours come from the theme's `$plot-…` variables.
"""

from __future__ import annotations

import math

from esper_tui.state import RunState
from esper_tui.widgets.alpha_plot import MARKERS, ThemedPlot, legend, plot_window

Series = tuple[str, tuple[int, ...], tuple[float, ...]]  # (label, epochs, values)

TEXT_TASKS = ("text", "textfile")
# (EpochPoint field, label, scale): val first, so it gets the first marker and colour.
ACCURACY = (("val_accuracy", "val", 1.0), ("train_accuracy", "train", 1.0))
BITS = (("val_loss", "val", 1 / math.log(2)), ("train_loss", "train", 1 / math.log(2)))


def is_language_model(state: RunState) -> bool:
    """A next-character task: its loss reads best as bits per character."""
    return state.topology == "transformer" or state.task in TEXT_TASKS


def metric_title(state: RunState) -> str:
    """What the plot shows, in words."""
    return "bits per character (lower is better)" if is_language_model(state) else "accuracy %"


def metric_series(state: RunState, window: tuple[int, int] | None = None) -> list[Series]:
    """One series per metric with a measured point in the window (None points are left out)."""
    window = window if window is not None else plot_window(state)
    series = []
    for name, label, scale in BITS if is_language_model(state) else ACCURACY:
        points = [(p.epoch, getattr(p, name)) for p in state.history
                  if getattr(p, name) is not None and (window is None or window[0] <= p.epoch <= window[1])]
        if points:
            series.append((label, tuple(e for e, _ in points), tuple(float(v) * scale for _, v in points)))
    return series


class MetricsPlot(ThemedPlot):
    """Train and val accuracy (or bits per character) by epoch, over the recent epochs."""

    def show(self, state: RunState, selected: str | None = None) -> None:
        self._last = (state, selected)
        window = plot_window(state)
        # The history is bounded, so its length alone can stall: key on the last point too.
        key = (window, len(state.history), state.history[-1] if state.history else None, id(state.history),
               is_language_model(state))
        if key == self._key:
            return
        self._key = key
        series = metric_series(state, window)
        self._labels = [label for label, _, _ in series]
        plt = self.plt
        plt.clear_figure()
        title = metric_title(state)
        plt.title(f"{title}: {legend(self._labels)}" if series else title)
        colours = self.line_colours()
        for i in reversed(range(len(series))):  # val last: on top where the lines meet
            _label, epochs, values = series[i]
            plt.plot(epochs, values, color=colours[i % len(colours)], marker=MARKERS[i % len(MARKERS)])
        if window is not None:
            self.draw_epochs(window)
        self.refresh()

    _labels: list[str] = []

    @property
    def labels(self) -> list[str]:
        """The line labels now drawn."""
        return list(self._labels)
