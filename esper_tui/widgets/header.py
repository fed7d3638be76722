"""The run header: which run, where it is and whether it is alive; how it learns; what the autopilot
waits for. Three lines, kept at every size (at 80×24 they are the only loss and accuracy on screen).

`header_parts`, `metrics_line` and `hints.autopilot_line` decide what to say (pure, tested); the widget
only draws it. The status word is styled by theme variable; the text alone carries the meaning.
"""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from esper_tui.format import DASH, fmt_int, fmt_num, fmt_pct, trend
from esper_tui.hints import autopilot_line
from esper_tui.state import Isolation, RunState
from esper_tui.status import Status

TREND_EPOCHS = 16  # val accuracy points in the header's trend sparkline

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


def isolation_label(isolation: Isolation | None) -> str | None:
    """The policy without where it came from: "host shielded from blending", not "… (default)"."""
    if not isolation:
        return None
    return isolation.label


def as_status(status: Status | str) -> Status:
    """A status word of the state ("LIVE") as a Status; a Status as it is (its word is never parsed)."""
    return status if isinstance(status, Status) else Status(status)


def header_parts(state: RunState, status: Status | str) -> list[Part]:
    """Everything the header can say, in reading order, each with its priority and style."""
    total = state.log_last_epoch or state.planned_epochs  # a replay knows where its run really ended
    epoch = f"epoch {state.epoch}" + (f"/{total}" if total else "")
    parts: list[Part] = [
        (0, "esper", "bold"),
        (1, f"run {state.run_id or DASH}", ""),
        (3, state.task or DASH, ""),
        (0, epoch, ""),
        (0, str(status), STATUS_STYLES.get(as_status(status).word, "bold")),
        (2, f"{fmt_int(state.samples_per_s)} samples/s", ""),
        *([(3, f"{state.ranks} ranks", "")] if state.ranks else []),  # samples/s is theirs together
    ]  # the autopilot has the third line to itself (`hints.autopilot_line`): not said twice
    isolation = isolation_label(state.isolation)
    if isolation:
        parts.append((4, isolation, ""))
    if state.skipped_lines:
        # What is on screen is not the whole log: as important as which run this is.
        n = state.skipped_lines
        parts.append((1, f"{n} line{'' if n == 1 else 's'} skipped", "bold $warning"))
    return parts


def metrics_line(state: RunState, width: int = 1000) -> str:
    """How the run learns: "val acc 90.8% ▃▅▆▇█ +1.2  val loss 0.354  lr 0.001  train loss 0.166".

    The trend is the last epochs' val accuracy (higher block = higher), then its change over them.
    Train loss, then lr, give way first when the line is too narrow.
    """
    accuracies = [p.val_accuracy for p in list(state.history)[-TREND_EPOCHS:]]
    known = [a for a in accuracies if a is not None]
    shape = ""
    if len(known) >= 2:
        shape = f" {trend(accuracies)} {known[-1] - known[0]:+.1f}"
    point = state.history[-1] if state.history else None
    parts: list[Part] = [
        (0, f"val acc {fmt_pct(state.val_accuracy)}{shape}", ""),
        (0, f"val loss {fmt_num(state.val_loss, 3)}", ""),
        (1, f"lr {fmt_num(state.lr, 3)}", ""),
        (2, f"train loss {fmt_num(point.train_loss if point else None, 3)}", ""),
    ]
    return "  ".join(text for _, text, _ in fit_parts(parts, width))


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


def header_text(state: RunState, status: Status | str, width: int = 1000) -> str:
    """The header line as plain text (what a user without colour reads)."""
    return "  ".join(text for _, text, _ in fit_parts(header_parts(state, status), width))


class RunHeader(Static):
    """One line: run, task, epoch/total, status, throughput, autopilot, accuracy, lr, isolation, and
    how many log lines were skipped (when any were).

    `status_override` (a typed `Status`: DETACHED, REPLAY x2 …) replaces the state's status when set, either
    as an attribute or per call of `show`.
    """

    DEFAULT_CSS = """
    RunHeader { height: 3; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("esper", name=name, id=id, classes=classes, markup=False)
        self.status_override: Status | None = None
        self._state: RunState | None = None
        self._call_override: str | None = None
        self._status_class: str | None = None
        self._drawn: tuple[str, ...] | None = None

    def show(self, state: RunState, selected: str | None = None, *, status_override: Status | None = None) -> None:
        """Redraw from the state. `selected` is accepted for a uniform widget API and unused."""
        self._state, self._call_override = state, status_override
        status = as_status(status_override or self.status_override or state.status)
        status_class = "status-" + status.word
        if status_class != self._status_class:
            if self._status_class:
                self.remove_class(self._status_class)
            self.add_class(status_class)
            self._status_class = status_class
        width = self.content_region.width or self.app.size.width or 80
        parts = fit_parts(header_parts(state, status), width)
        lines = (metrics_line(state, width), autopilot_line(state))
        key = (*(text for _, text, _ in parts), *lines)
        if key == self._drawn:
            return
        self._drawn = key
        pieces: list[str | tuple[str, str]] = []
        for i, (_, text, style) in enumerate(parts):
            if i:
                pieces.append("  ")
            pieces.append((text, style) if style else text)
        pieces += ["\n", lines[0], "\n", (lines[1], "italic")]
        self.update(Content.assemble(*pieces), layout=False)

    def on_resize(self) -> None:
        if self._state is not None:
            self._drawn = None
            self.show(self._state, status_override=self._call_override)

    @property
    def text(self) -> str:
        """The header as drawn (three lines), without styles."""
        if not self._drawn:
            return ""
        *first, metrics, autopilot = self._drawn
        return "\n".join(["  ".join(first), metrics, autopilot])
