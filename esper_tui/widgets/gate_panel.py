"""The gate panel: the last gate verdict on the selected slot, check by check, as sentences.

`gate_title` and `check_rows` (pure) say what is shown: PASS/FAIL as words, each check as a sentence
with its comparator ("needs alpha ≥ 0.99 (now 0.35)", "seed gradient norm 3.1, at most 100"), "not
measured yet" for unmeasured values, "forced" where the operator bypassed the gate.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import ScrollableContainer
from textual.content import Content
from textual.widget import Widget
from textual.widgets import Static

from esper_tui.format import fmt_credit
from esper_tui.hints import next_step
from esper_tui.state import GateView, RunState

VERDICT_STYLES = {"PASS": "$success", "FAIL": "bold $error"}
NO_SLOT = "no slot selected"
NO_GATE = "no gate evaluated yet"


def gate_title(gate: GateView | None) -> str:
    """"G2 -> BLENDING  FAILED (epoch 12)", with "  FORCED" when the operator bypassed it."""
    if gate is None:
        return NO_GATE
    name = gate.gate or "illegal transition"
    verdict = "PASSED" if gate.passed else "FAILED"
    title = f"{name} -> {gate.target or '?'}  {verdict} (epoch {gate.epoch})"
    return title + ("  FORCED" if gate.forced else "")


def check_rows(gate: GateView | None) -> list[tuple[str, str]]:
    """One (result, sentence) row per check; a failed check of a forced gate says so. A credit check
    says the whole estimate and how it was measured, not one bare number."""
    if gate is None:
        return []
    rows = []
    for check in gate.checks:
        result = "PASS" if check.passed else ("FAIL forced" if gate.forced else "FAIL")
        sentence = check.sentence
        credit = check.credit
        if credit is not None and credit.counterfactual is not None:
            method = f", {credit.credit_method}" if credit.credit_method else ""
            sentence += f"; credit {fmt_credit(credit.counterfactual, credit.credit_low, credit.credit_high)}{method}"
        rows.append((result, sentence))
    return rows


def table_content(rows: list[tuple[str, str]], width: int = 1000) -> Content:
    """The rows, verdict then sentence; a sentence wider than the panel wraps under itself."""
    if not rows:
        return Content("")
    pad = max(len(result) for result, _ in rows)
    room = max(10, width - pad - 1)
    pieces: list[str | tuple[str, str]] = []
    for n, (result, sentence) in enumerate(rows):
        if n:
            pieces.append("\n")
        pieces.append((result.ljust(pad), VERDICT_STYLES[result.split(" ", 1)[0]]))
        lines = _wrap(sentence, room)
        pieces.append(" " + lines[0])
        for more in lines[1:]:
            pieces.append("\n" + " " * (pad + 1) + more)
    return Content.assemble(*pieces)


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(" "), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line]


def wrap_lines(text: str, width: int) -> str:
    """`text` with each of its lines wrapped at `width` (words kept whole), so the widget showing it
    never wraps it again and its height is its count of lines."""
    return "\n".join(wrapped for line in text.split("\n") for wrapped in _wrap(line, max(10, width)))


def _lines(text: object) -> int:
    return str(text).count("\n") + 1


class GatePanel(Widget):
    """The selected slot's last gate: title line, then one row per check (scrolls when narrow)."""

    DEFAULT_CSS = """
    GatePanel { height: 1fr; }
    GatePanel .gate-title { width: 1fr; height: auto; }
    GatePanel ScrollableContainer { height: 1fr; scrollbar-gutter: stable; }
    GatePanel .gate-checks { width: 1fr; height: auto; }
    """

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.border_title = "gate"
        self._border_text = "gate"
        self._key: tuple[object, ...] | None = None
        self._title_text = ""
        self._rows: list[tuple[str, str]] = []
        self._title: Static | None = None
        self._checks: Static | None = None
        self._pending: tuple[RunState, str | None] | None = None

    def compose(self) -> ComposeResult:
        yield Static("", classes="gate-title", markup=False)
        with ScrollableContainer():
            yield Static("", classes="gate-checks", markup=False)

    def on_mount(self) -> None:
        self._title = self.query_one(".gate-title", Static)
        self._checks = self.query_one(".gate-checks", Static)
        if self._pending is not None:
            self.show(*self._pending)

    def show(self, state: RunState, selected: str | None = None) -> None:
        """Show the last gate of slot `selected`."""
        if self._title is None or self._checks is None:
            self._pending = (state, selected)
            return
        self._pending = None
        view = state.slots.get(selected) if selected is not None else None
        gate = view.gate if view is not None else None
        hint = next_step(view, state.autopilot) if view is not None else ""
        key = (selected, view is None, gate, hint)
        if key == self._key:  # GateView compares by value: an equal verdict draws the same
            return
        self._key = key
        # Content, not str: a str title is read as markup, and the slot's name is the log's.
        title = f"gate: {selected}" if view is not None else "gate"
        if title != self._border_text:  # setting a border title repaints the whole panel, even unchanged
            self._border_text = title
            self.border_title = Content(title)
        self._title_text = NO_SLOT if view is None else gate_title(gate)
        if hint:  # what the seed still needs, whole (a card at 80 columns has room for its start only)
            self._title_text += f"\nnext: {hint}"
        self._rows = check_rows(gate)
        self.set_class(view is None or gate is None, "-empty")
        self.set_class(gate is not None and gate.passed, "-passed")
        self.set_class(gate is not None and not gate.passed, "-failed")
        self.set_class(gate is not None and gate.forced, "-forced")
        self._draw()

    def _draw(self) -> None:
        # Both parts come wrapped to the panel's width, so their heights are their counts of lines: a
        # new verdict mostly changes numbers in place and reflows the screen only when a count
        # changes (a screen relayout per epoch was a large part of a frame's cost at 4 Hz).
        if self._title is None or self._checks is None:
            return
        width = self.content_region.width or 1000
        title = wrap_lines(self._title_text, width)
        self._title.update(title, layout=_lines(title) != _lines(self._title.content))
        # The checks scroll: wrapped to the room beside the scrollbar's gutter, kept even when no
        # scrollbar is shown, so the width never depends on the height.
        room = self._checks.parent.scrollable_content_region.width if self._checks.parent else 0
        content = table_content(self._rows, room or max(1, width - 2))
        self._checks.update(content, layout=_lines(content) != _lines(self._checks.content))

    def on_resize(self) -> None:
        self._draw()

    @property
    def text(self) -> str:
        """The panel as plain text: the title and the check rows."""
        rows = ["  ".join(row) for row in self._rows]
        return "\n".join([self._title_text, *rows])
