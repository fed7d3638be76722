"""The gate panel: the last gate verdict on the selected slot, check by check.

`gate_title` and `check_rows` (pure) say what is shown: PASS/FAIL as words, "—" for unmeasured
values, "forced" where the operator bypassed the gate. The widget lays the rows out in columns.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import ScrollableContainer
from textual.content import Content
from textual.widget import Widget
from textual.widgets import Static

from esper_tui.format import fmt_credit, fmt_value
from esper_tui.state import GateView, RunState

HEADINGS = ("result", "check", "value", "threshold")
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


def check_rows(gate: GateView | None) -> list[tuple[str, str, str, str]]:
    """One (result, check, value, threshold) row per check; a failed check of a forced gate says so."""
    if gate is None:
        return []
    rows = []
    for check in gate.checks:
        result = "PASS" if check.passed else ("FAIL forced" if gate.forced else "FAIL")
        name, value = check.name, fmt_value(check.value)
        credit = check.credit
        if credit is not None and credit.counterfactual is not None:
            # A credit check shows the whole estimate (the value checked is one end of it or its
            # point) and how it was measured, not one bare number.
            value = fmt_credit(credit.counterfactual, credit.credit_low, credit.credit_high)
            name = f"{name} ({credit.credit_method})" if credit.credit_method else name
        rows.append((result, name, value, fmt_value(check.threshold)))
    return rows


def table_content(rows: list[tuple[str, str, str, str]], width: int = 1000) -> Content:
    """The rows in aligned columns under a heading; when that is wider than `width`, each check
    takes two lines (verdict and name, then value and threshold). Verdicts styled by theme variable."""
    if not rows:
        return Content("")
    table = [HEADINGS, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADINGS))]
    pieces: list[str | tuple[str, str]] = []
    if sum(widths) + 2 * (len(widths) - 1) <= width:
        for n, row in enumerate(table):
            if n:
                pieces.append("\n")
            for i, cell in enumerate(row):
                text = cell.ljust(widths[i]) if i < len(row) - 1 else cell
                if n == 0:
                    pieces.append((text, "bold"))
                elif i == 0:
                    pieces.append((text, VERDICT_STYLES[cell.split(" ", 1)[0]]))
                else:
                    pieces.append(text)
                if i < len(row) - 1:
                    pieces.append("  ")
        return Content.assemble(*pieces)
    indent = " " * (len("FAIL") + 1)
    for n, (result, name, value, threshold) in enumerate(rows):
        if n:
            pieces.append("\n")
        pieces += [(result, VERDICT_STYLES[result.split(" ", 1)[0]]), f" {name}\n{indent}{value} vs {threshold}"]
    return Content.assemble(*pieces)


class GatePanel(Widget):
    """The selected slot's last gate: title line, then one row per check (scrolls when narrow)."""

    DEFAULT_CSS = """
    GatePanel { height: 1fr; }
    GatePanel .gate-title { height: auto; }
    GatePanel ScrollableContainer { height: 1fr; }
    GatePanel .gate-checks { width: auto; height: auto; }
    """

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.border_title = "gate"
        self._key: tuple[object, ...] | None = None
        self._title_text = ""
        self._rows: list[tuple[str, str, str, str]] = []
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
        key = (selected, view is None, gate)
        if key == self._key:  # GateView compares by value: an equal verdict draws the same
            return
        self._key = key
        # Content, not str: a str title is read as markup, and the slot's name is the log's.
        self.border_title = Content(f"gate: {selected}" if view is not None else "gate")
        self._title_text = NO_SLOT if view is None else gate_title(gate)
        self._rows = check_rows(gate)
        self.set_class(view is None or gate is None, "-empty")
        self.set_class(gate is not None and gate.passed, "-passed")
        self.set_class(gate is not None and not gate.passed, "-failed")
        self.set_class(gate is not None and gate.forced, "-forced")
        self._title.update(self._title_text)
        self._draw_checks()

    def _draw_checks(self) -> None:
        if self._checks is not None:
            self._checks.update(table_content(self._rows, self.content_region.width or 1000))

    def on_resize(self) -> None:
        self._draw_checks()

    @property
    def text(self) -> str:
        """The panel as plain text: the title and the check rows."""
        rows = ["  ".join(row) for row in self._rows]
        return "\n".join([self._title_text, *rows])
