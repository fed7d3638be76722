"""The run header: one line saying which run, where it is, and whether it is alive.

`header_parts` decides what to say (pure, tested); the widget only draws it. The status word is
styled by theme variable; the text alone carries the meaning.
"""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from esper_tui.format import DASH, fmt_int, fmt_num, fmt_pct
from esper_tui.state import RunState

# Style of the status word, by its first word. Theme variables, never colours.
STATUS_STYLES: dict[str, str] = {
    "STARTING": "bold",
    "LIVE": "bold $success",
    "PAUSED": "bold $warning",
    "FINISHED": "bold $accent",
    "STOPPED": "bold $warning",
    "CRASHED": "bold $error",
    "DETACHED": "bold $warning",
    "REPLAY": "bold $accent",
}

# (priority, text, style): lower priority numbers are dropped last when the line is too narrow.
Part = tuple[int, str, str]


def isolation_label(isolation: str | None) -> str | None:
    """"detach (default)" → "detach": the policy without where it came from."""
    if not isolation:
        return None
    return isolation.split(" (", 1)[0]


def header_parts(state: RunState, status: str) -> list[Part]:
    """Everything the header can say, in reading order, each with its priority and style."""
    epoch = f"epoch {state.epoch}" + (f"/{state.planned_epochs}" if state.planned_epochs else "")
    autopilot = DASH if state.autopilot is None else ("on" if state.autopilot else "off")
    parts: list[Part] = [
        (0, "esper", "bold"),
        (1, f"run {state.run_id or DASH}", ""),
        (3, state.task or DASH, ""),
        (0, epoch, ""),
        (0, status, STATUS_STYLES.get(status.split(" ", 1)[0], "bold")),
        (2, f"{fmt_int(state.samples_per_s)} samples/s", ""),
        (2, f"autopilot {autopilot}", ""),
        (2, f"val {fmt_pct(state.val_accuracy)}", ""),
        (4, f"lr {fmt_num(state.lr, 3)}", ""),
    ]
    isolation = isolation_label(state.isolation)
    if isolation:
        parts.append((4, isolation, ""))
    if state.skipped_lines:
        # What is on screen is not the whole log: as important as which run this is.
        n = state.skipped_lines
        parts.append((1, f"{n} line{'' if n == 1 else 's'} skipped", "bold $warning"))
    return parts


def fit_parts(parts: list[Part], width: int, sep: str = "  ") -> list[Part]:
    """Drop the least important parts (highest priority number, rightmost first) until they fit."""
    kept = list(parts)

    def length() -> int:
        return sum(len(text) for _, text, _ in kept) + len(sep) * max(0, len(kept) - 1)

    while length() > width and any(priority > 0 for priority, _, _ in kept):
        worst = max(priority for priority, _, _ in kept)
        index = max(i for i, (priority, _, _) in enumerate(kept) if priority == worst)
        del kept[index]
    return kept


def header_text(state: RunState, status: str, width: int = 1000) -> str:
    """The header line as plain text (what a user without colour reads)."""
    return "  ".join(text for _, text, _ in fit_parts(header_parts(state, status), width))


class RunHeader(Static):
    """One line: run, task, epoch/total, status, throughput, autopilot, accuracy, lr, isolation, and
    how many log lines were skipped (when any were).

    `status_override` (e.g. "DETACHED", "REPLAY x2") replaces the state's status when set, either
    as an attribute or per call of `show`.
    """

    DEFAULT_CSS = """
    RunHeader { height: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("esper", name=name, id=id, classes=classes, markup=False)
        self.status_override: str | None = None
        self._state: RunState | None = None
        self._call_override: str | None = None
        self._status_class: str | None = None
        self._drawn: tuple[str, ...] | None = None

    def show(self, state: RunState, selected: str | None = None, *, status_override: str | None = None) -> None:
        """Redraw from the state. `selected` is accepted for a uniform widget API and unused."""
        self._state, self._call_override = state, status_override
        status = status_override or self.status_override or state.status
        status_class = "status-" + status.split(" ", 1)[0]
        if status_class != self._status_class:
            if self._status_class:
                self.remove_class(self._status_class)
            self.add_class(status_class)
            self._status_class = status_class
        width = self.content_region.width or self.app.size.width or 80
        parts = fit_parts(header_parts(state, status), width)
        key = tuple(text for _, text, _ in parts)
        if key == self._drawn:
            return
        self._drawn = key
        pieces: list[str | tuple[str, str]] = []
        for i, (_, text, style) in enumerate(parts):
            if i:
                pieces.append("  ")
            pieces.append((text, style) if style else text)
        self.update(Content.assemble(*pieces), layout=False)

    def on_resize(self) -> None:
        if self._state is not None:
            self._drawn = None
            self.show(self._state, status_override=self._call_override)

    @property
    def text(self) -> str:
        """The line as drawn, without styles."""
        return "  ".join(self._drawn or ())
