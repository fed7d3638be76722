"""One slot's card: stage badge, blueprint, alpha, gradient ratio against threshold, credit, and the
seed's next step in words (its next gate and what it still needs).

What each line says is decided by the pure `card_lines`; the widget only swaps CSS classes (stage,
selection) and posts `SlotCard.Selected` when clicked. Stages are always written out as text.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.content import Content
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Static

from esper_tui.format import (
    DASH,
    UNKNOWN_STAGE_CLASS,
    alpha_bar,
    fmt_credit,
    fmt_fixed,
    fmt_int,
    fmt_num,
    stage_badge,
    stage_class,
)
from esper_tui.hints import next_step
from esper_tui.state import RunState, SlotView
from esper_tui.widgets.ratio_sparkline import RatioLine

ALPHA_BAR_WIDTH = 10


@dataclass(frozen=True, slots=True)
class CardLines:
    """The words on a card (plain text, no styles)."""

    badge: str
    blueprint: str
    alpha: str
    ratio: str
    ratio_below: bool
    detail: str
    params: str
    next: str = ""


def ratio_label(ratio: float | None, threshold: float | None) -> tuple[str, bool]:
    """("r 0.31 (>= 0.05)", False), ("r 0.031 (< 0.05)", True) or ("r — (unmeasured)", False)."""
    if ratio is None:
        return f"r {DASH} (unmeasured)", False
    if threshold is None:
        return f"r {fmt_num(ratio, 2)}", False
    below = ratio < threshold
    return f"r {fmt_num(ratio, 2)} ({'<' if below else '>='} {fmt_num(threshold, 2)})", below


def card_lines(view: SlotView, autopilot: bool | None = None) -> CardLines:
    ratio, below = ratio_label(view.report.grad_ratio, view.report.grad_ratio_threshold)
    blueprint = view.report.blueprint or "(empty)"
    if view.forced:
        blueprint += "  FORCED"
    cf = fmt_credit(view.report.counterfactual, view.report.credit_low, view.report.credit_high)
    if view.report.counterfactual is not None and view.report.credit_method:
        cf += f" {view.report.credit_method}"  # how it was measured: a twin's credit and an ablation's differ
    return CardLines(
        badge=stage_badge(view.stage),
        blueprint=blueprint,
        alpha=f"alpha {fmt_fixed(view.report.alpha)} {alpha_bar(view.report.alpha, ALPHA_BAR_WIDTH)}",
        ratio=ratio,
        ratio_below=below,
        # credit first: it survives truncation
        detail=f"{cf}  {view.report.epochs_in_stage} epoch{'' if view.report.epochs_in_stage == 1 else 's'} in stage",
        params=f"{fmt_int(view.report.params)} params" if view.report.params else "",
        next=next_step(view, autopilot),
    )


def head_content(lines: CardLines, stage: str, forced: bool) -> Content:
    """The card's first line: the stage badge on its stage colour, then the blueprint (bold in the
    warning colour when the last move was forced)."""
    badge_style = f"bold $background on $stage-{stage.lower()}" if stage_class(stage) != UNKNOWN_STAGE_CLASS else "bold"
    return Content.assemble((lines.badge, badge_style), " ", (lines.blueprint, "bold $warning" if forced else ""))


class SlotCard(Widget):
    """The card of slot `slot`. Click it to select it (posts `SlotCard.Selected`).

    Every line is one fixed-height, full-width widget whose text changes in place: a new value never
    moves anything, so an update repaints the card's lines and never reflows the screen (a screen
    relayout per changed line was most of a frame's cost at 4 Hz).
    """

    DEFAULT_CSS = """
    SlotCard { height: auto; width: 1fr; }
    SlotCard .card-line { height: 1; width: 1fr; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    class Selected(Message):
        """The operator clicked this card."""

        def __init__(self, slot: str) -> None:
            super().__init__()
            self.slot = slot

    def __init__(self, slot: str, *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.slot = slot
        self.border_title = Content(slot)  # a str would be read as markup, and the name is the log's
        self._stage_class: str | None = None
        self._lines: CardLines | None = None
        self._pending: tuple[RunState, str | None] | None = None
        self._head: Static | None = None

    def compose(self) -> ComposeResult:
        yield Static("", classes="card-line card-head", markup=False)
        yield Static("", classes="card-line card-alpha", markup=False)
        yield RatioLine(classes="card-line card-ratio")
        yield Static("", classes="card-line card-detail", markup=False)
        yield Static("", classes="card-line card-next", markup=False)

    def on_mount(self) -> None:
        self._head = self.query_one(".card-head", Static)
        self._alpha = self.query_one(".card-alpha", Static)
        self._ratio = self.query_one(RatioLine)
        self._detail = self.query_one(".card-detail", Static)
        self._next = self.query_one(".card-next", Static)
        if self._pending is not None:
            self.show(*self._pending)

    def show(self, state: RunState, selected: str | None = None) -> None:
        """Redraw from the state; `selected` is the slot the operator picked."""
        self.set_class(selected == self.slot, "-selected")
        if self._head is None:  # not composed yet (just mounted): draw on mount
            self._pending = (state, selected)
            return
        self._pending = None
        view = state.slots.get(self.slot)
        if view is None:
            return
        stage = str(view.stage)
        new_class = stage_class(stage)
        if new_class != self._stage_class:
            if self._stage_class:
                self.remove_class(self._stage_class)
            self.add_class(new_class)
            self._stage_class = new_class
        self.set_class(view.forced, "-forced")
        self.set_class(view.report.counterfactual is not None, "-credited")
        lines = card_lines(view, state.autopilot)
        self._ratio.update(lines.ratio, lines.ratio_below, view.ratio_history, view.report.grad_ratio_threshold)
        if lines == self._lines:
            return
        old, self._lines = self._lines, lines
        if old is None or (old.badge, old.blueprint) != (lines.badge, lines.blueprint):  # the badge names the stage
            self._head.update(head_content(lines, stage, view.forced), layout=False)
        for widget, name in ((self._alpha, "alpha"), (self._detail, "detail"), (self._next, "next")):
            text = getattr(lines, name)
            if old is None or text != getattr(old, name):
                widget.update(text, layout=False)
        if old is None or old.params != lines.params:
            self.border_subtitle = lines.params

    @property
    def text(self) -> str:
        """What the card says, line by line (for tests and screen readers of the log)."""
        if self._lines is None:
            return self.slot
        lines = self._lines
        return "\n".join([
            self.slot,
            f"{lines.badge} {lines.blueprint}",
            lines.alpha,
            self._ratio.text,
            lines.detail,
            lines.next,
            lines.params,
        ])

    def on_click(self) -> None:
        self.post_message(self.Selected(self.slot))
