"""A card's gradient-ratio line: the ratio against its threshold in words, then a sparkline as wide as fits.

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


LABEL_BELOW_STYLE = "bold $error"


class RatioLine(Widget):
    """A card's ratio line: its label ("r 0.031 (< 0.05)", bold `$error` when below the threshold),
    then the most recent ratios that fit the rest of the width as a sparkline. One widget, so a label
    that grows or shrinks only repaints the line; `update` redraws only on change."""

    DEFAULT_CSS = """
    RatioLine { height: 1; width: 1fr; }
    """

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._label = ""
        self._below = False
        self._values: tuple[float | None, ...] = ()
        self._threshold: float | None = None

    def update(self, label: str, below: bool, values: Iterable[float | None], threshold: float | None) -> None:
        values = tuple(values)
        if (label, below, values, threshold) == (self._label, self._below, self._values, self._threshold):
            return
        self._label, self._below, self._values, self._threshold = label, below, values, threshold
        self.refresh()

    def _spark_width(self) -> int:
        return max(0, self.content_region.width - len(self._label) - 1)

    @property
    def text(self) -> str:
        """The line as drawn at the current width, without styles."""
        spark = sparkline(self._values, self._threshold, self._spark_width())[0]
        return f"{self._label} {spark}".rstrip()

    def render(self) -> Content:
        label = Content.styled(self._label, LABEL_BELOW_STYLE) if self._below else Content(self._label)
        spark = sparkline_content(self._values, self._threshold, self._spark_width())
        return Content.assemble(label, " ", spark) if spark else label
