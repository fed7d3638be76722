"""The replay's timeline widget: draws `esper_tui.timeline.timeline_text` (see there), one line."""

from __future__ import annotations

from textual.widgets import Static

from esper_tui.timeline import LEGEND, Mark, timeline_text


class Timeline(Static):
    """The replay's timeline (hidden for a live run)."""

    DEFAULT_CSS = """
    Timeline { height: 1; text-wrap: nowrap; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("", markup=False, **kwargs)
        self.tooltip = LEGEND
        self._drawn: tuple | None = None

    def show(self, marks: tuple[Mark, ...], last_epoch: int, position: int) -> None:
        """Redraw when the marks, the run's length, the position or the width changed."""
        width = self.content_region.width or self.app.size.width or 80
        key = (marks, last_epoch, position, width)
        if key == self._drawn:
            return
        self._drawn = key
        self.update(timeline_text(marks, last_epoch, position, width))


__all__ = ["Timeline"]
