"""Alpha over the recent epochs, one line per slot whose seed is (or was) blended in (plotext).

Both plots show the same window of epochs (`plot_window`: the last 30, or since the earliest live
seed germinated), with whole-epoch ticks. Lines differ by marker as well as colour, and the legend is
in the title, never over a curve. Colours come from the theme's `$plot-…` variables; the widget
redraws only when what it draws changed (the series make the key).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count

from textual.color import Color
from textual_plotext import PlotextPlot

from engine.lifecycle import LIVE_STAGES
from esper_tui.state import RunState

Series = tuple[str, tuple[int, ...], tuple[float, ...]]

WINDOW = 30  # epochs shown: a blend ramp of ~5 epochs is a sixth of the width, not a sliver
LONGEST = 60  # at most this many, however early the oldest live seed germinated
# One marker per line, in order, so lines differ without colour: braille, dots, then plain letters.
MARKERS = ("braille", "dot", "x", "+", "o", "*")
MARKER_CHARS = {"braille": "⢕", "dot": "•"}  # how the legend shows a marker (plotext's own glyphs)


def germinated_at(state: RunState, slot: str) -> int | None:
    """The epoch the slot's seed germinated, from the event log (None when no longer in the log)."""
    for line in reversed(state.log):
        if line.kind == "seed_germinated" and line.slot == slot:
            return line.epoch
    return None


def plot_window(state: RunState, window: int = WINDOW, longest: int = LONGEST) -> tuple[int, int] | None:
    """The epochs the curves show, (first, last): the last `window` epochs, reaching back to the
    earliest live seed's germination when that is older (at most `longest` epochs in all); None
    before the first epoch completes."""
    if not state.history:
        return None
    last = state.history[-1].epoch
    first = last - window + 1
    for name, view in state.slots.items():
        if view.stage in LIVE_STAGES:
            born = germinated_at(state, name)
            if born is not None:
                first = min(first, born)
    first = max(first, last - longest + 1, state.history[0].epoch)
    return first, last


def epoch_ticks(first: int, last: int, most: int = 6) -> list[int]:
    """Whole-epoch ticks from `first` to `last`, at most `most` of them, on a step of 1, 2, 5, 10 …"""
    span = max(1, last - first)
    step = next(s for s in _nice_steps() if span // s + 1 <= most)
    start = -(-first // step) * step  # the first multiple of the step in the window
    return list(range(start, last + 1, step)) or [first]


def _nice_steps() -> Iterator[int]:
    for power in count():
        for mantissa in (1, 2, 5):
            yield mantissa * 10**power


def alpha_series(state: RunState, selected: str | None = None, window: tuple[int, int] | None = None) -> list[Series]:
    """(label, epochs, alphas) of each slot whose alpha rose above 0 in the window, from the last 0
    before the rise to the first 0 after a fall: a slot without a seed, or with one not blending yet,
    draws no flat line at 0. The selected slot's label is starred."""
    window = window if window is not None else plot_window(state)
    series = []
    for name, view in state.slots.items():
        points = [(e, a) for e, a in view.alpha_history if window is None or window[0] <= e <= window[1]]
        risen = [i for i, (_, a) in enumerate(points) if a > 0]
        if not risen:
            continue
        points = points[max(0, risen[0] - 1): risen[-1] + 2]
        series.append((f"*{name}" if name == selected else name, tuple(e for e, _ in points),
                       tuple(a for _, a in points)))
    return series


def legend(labels: list[str]) -> str:
    """The legend for lines drawn with `MARKERS` in order: "⢕ block1  • block2  x block3"."""
    return "  ".join(f"{MARKER_CHARS.get(m, m)} {label}" for m, label in zip(MARKERS * len(labels), labels))


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

    def draw_epochs(self, window: tuple[int, int]) -> None:
        """The x axis: the window's epochs, ticked at whole epochs."""
        first, last = window
        ticks = epoch_ticks(first, last)
        self.plt.xlim(first, max(last, first + 1))
        self.plt.xticks(ticks, [str(t) for t in ticks])
        self.plt.xlabel("epoch")

    _key: object = None
    _last: tuple[RunState, str | None] | None = None

    def show(self, state: RunState, selected: str | None = None) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class AlphaPlot(ThemedPlot):
    """Alpha in [0, 1] against epoch, over the recent epochs, for every slot whose seed blended in."""

    def show(self, state: RunState, selected: str | None = None) -> None:
        self._last = (state, selected)
        window = plot_window(state)
        series = alpha_series(state, selected, window)
        key = (window, tuple(series))
        if key == self._key:
            return
        self._key = key
        self._labels = [label for label, _, _ in series]
        plt = self.plt
        plt.clear_figure()
        plt.title(f"alpha: {legend(self._labels)}" if series else "alpha: no seed yet")
        colours = self.line_colours()
        # Each slot keeps its marker and colour; the selected one is drawn last, on top where lines meet.
        order = sorted(range(len(series)), key=lambda i: series[i][0].startswith("*"))
        for i in order:
            _label, epochs, alphas = series[i]
            plt.plot(epochs, alphas, color=colours[i % len(colours)], marker=MARKERS[i % len(MARKERS)])
        if window is not None:
            self.draw_epochs(window)
        plt.ylim(0, 1)
        plt.yticks([0, 0.5, 1], ["0", "0.5", "1"])
        self.refresh()

    _labels: list[str] = []

    @property
    def labels(self) -> list[str]:
        """The line labels now drawn."""
        return list(self._labels)
