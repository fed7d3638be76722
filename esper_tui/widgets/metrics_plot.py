"""Loss and accuracy over epochs (plotext): train/val loss on the left axis, val accuracy on the right.

`metric_series` (pure) picks the points, skipping unmeasured ones; the widget redraws only when they
change. Line colours come from the theme's `$plot-…` variables.
"""

from __future__ import annotations

from esper_tui.state import RunState
from esper_tui.widgets.alpha_plot import ThemedPlot

Series = tuple[str, str, tuple[int, ...], tuple[float, ...]]  # (label, y side, epochs, values)

METRICS: tuple[tuple[str, str, str], ...] = (
    # (EpochPoint field, label, y side)
    ("train_loss", "train loss", "left"),
    ("val_loss", "val loss", "left"),
    ("val_accuracy", "val acc %", "right"),
)


def metric_series(state: RunState) -> list[Series]:
    """One series per metric that has at least one measured point (None points are left out)."""
    series = []
    for field, label, side in METRICS:
        points = [(p.epoch, getattr(p, field)) for p in state.history if getattr(p, field) is not None]
        if points:
            series.append((label, side, tuple(e for e, _ in points), tuple(float(v) for _, v in points)))
    return series


class MetricsPlot(ThemedPlot):
    """Train and validation loss (left axis) and validation accuracy in % (right axis) by epoch."""

    def show(self, state: RunState, selected: str | None = None) -> None:
        self._last = (state, selected)
        # The history is bounded, so its length alone can stall: key on the last point too.
        key = (len(state.history), state.history[-1] if state.history else None, id(state.history))
        if key == self._key:
            return
        self._key = key
        series = metric_series(state)
        self._labels = [label for label, _, _, _ in series]
        plt = self.plt
        plt.clear_figure()
        plt.title("loss / accuracy")
        plt.xlabel("epoch")
        plt.ylabel("loss", yside="left")
        plt.ylabel("acc %", yside="right")
        colours = self.line_colours()
        for i, (label, side, epochs, values) in enumerate(series):
            plt.plot(epochs, values, label=label, yside=side, color=colours[i % len(colours)], marker="braille")
        self.refresh()

    _labels: list[str] = []

    @property
    def labels(self) -> list[str]:
        """The line labels now drawn."""
        return list(self._labels)
