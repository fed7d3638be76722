"""A one-line gradient-ratio sparkline against its threshold, as wide as the widget.

The shape comes from `format.sparkline` (pure): below threshold is always the lowest block and is
styled `$error`, unmeasured points are gaps. This widget only picks the width and the styles.
"""

from __future__ import annotations

from collections.abc import Iterable

from textual.content import Content
from textual.widget import Widget

from esper_tui.format import sparkline

BELOW_STYLE = "$error"
ABOVE_STYLE = "$success"


def sparkline_content(values: Iterable[float | None], threshold: float | None, width: int) -> Content:
    """The sparkline as styled content: below-threshold cells `$error`, the rest `$success`."""
    chars, below = sparkline(values, threshold, width)
    if not chars:
        return Content("")
    pieces: list[tuple[str, str]] = []
    for char, low in zip(chars, below):
        style = BELOW_STYLE if low else ("" if char == " " else ABOVE_STYLE)
        if pieces and pieces[-1][1] == style:
            pieces[-1] = (pieces[-1][0] + char, style)
        else:
            pieces.append((char, style))
    return Content.assemble(*pieces)


class RatioSparkline(Widget):
    """The most recent ratios that fit the width; `update` them, it redraws only on change."""

    DEFAULT_CSS = """
    RatioSparkline { height: 1; width: 1fr; }
    """

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._values: tuple[float | None, ...] = ()
        self._threshold: float | None = None

    def update(self, values: Iterable[float | None], threshold: float | None) -> None:
        values = tuple(values)
        if values == self._values and threshold == self._threshold:
            return
        self._values, self._threshold = values, threshold
        self.refresh()

    @property
    def text(self) -> str:
        """The line as drawn at the current width, without styles."""
        return sparkline(self._values, self._threshold, self.content_region.width)[0]

    def render(self) -> Content:
        return sparkline_content(self._values, self._threshold, self.content_region.width)
