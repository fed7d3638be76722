"""One slot's card: stage badge, blueprint, alpha, gradient ratio against threshold, credit, and the
seed's next step in words (its next gate and what it still needs).

What each line says is decided by the pure `card_lines`; the widget only swaps CSS classes (stage,
selection) and posts `SlotCard.Selected` when clicked. Stages are always written out as text.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.content import Content
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Static

from esper_tui.format import DASH, alpha_bar, fmt_credit, fmt_fixed, fmt_int, fmt_num, stage_badge, stage_class
from esper_tui.hints import next_step
from esper_tui.state import RunState, SlotView
from esper_tui.widgets.ratio_sparkline import RatioSparkline

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


class SlotCard(Widget):
    """The card of slot `slot`. Click it to select it (posts `SlotCard.Selected`)."""

    DEFAULT_CSS = """
    SlotCard { height: auto; width: 1fr; }
    SlotCard .card-line { height: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    SlotCard .card-head { height: 1; }
    SlotCard .badge { width: auto; margin-right: 1; }
    SlotCard .ratio-label { width: auto; margin-right: 1; }
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
        self._badge: Static | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(classes="card-head"):
            yield Static("", classes="badge", markup=False)
            yield Static("", classes="card-line blueprint", markup=False)
        yield Static("", classes="card-line card-alpha", markup=False)
        with Horizontal(classes="card-head card-ratio"):
            yield Static("", classes="ratio-label", markup=False)
            yield RatioSparkline(classes="sparkline")
        yield Static("", classes="card-line card-detail", markup=False)
        yield Static("", classes="card-line card-next", markup=False)

    def on_mount(self) -> None:
        self._badge = self.query_one(".badge", Static)
        self._blueprint = self.query_one(".blueprint", Static)
        self._alpha = self.query_one(".card-alpha", Static)
        self._ratio = self.query_one(".ratio-label", Static)
        self._spark = self.query_one(RatioSparkline)
        self._detail = self.query_one(".card-detail", Static)
        self._next = self.query_one(".card-next", Static)
        if self._pending is not None:
            self.show(*self._pending)

    def show(self, state: RunState, selected: str | None = None) -> None:
        """Redraw from the state; `selected` is the slot the operator picked."""
        self.set_class(selected == self.slot, "-selected")
        if self._badge is None:  # not composed yet (just mounted): draw on mount
            self._pending = (state, selected)
            return
        self._pending = None
        view = state.slots.get(self.slot)
        if view is None:
            return
        new_class = stage_class(view.stage)
        if new_class != self._stage_class:
            for widget in (self, self._badge):
                if self._stage_class:
                    widget.remove_class(self._stage_class)
                widget.add_class(new_class)
            self._stage_class = new_class
        self.set_class(view.forced, "-forced")
        self.set_class(view.report.counterfactual is not None, "-credited")
        self._spark.update(view.ratio_history, view.report.grad_ratio_threshold)
        lines = card_lines(view, state.autopilot)
        if lines == self._lines:
            return
        old, self._lines = self._lines, lines
        # Each is one line. The fixed-width lines never move anything; only the two sized to their
        # text (badge, ratio label) need a reflow when their length changes (a full-screen relayout
        # per changed card line was most of a frame's cost).
        for widget, name, sized in ((self._badge, "badge", True), (self._blueprint, "blueprint", False),
                                    (self._alpha, "alpha", False), (self._ratio, "ratio", True),
                                    (self._detail, "detail", False), (self._next, "next", False)):
            text = getattr(lines, name)
            before = None if old is None else getattr(old, name)
            if text != before:
                widget.update(text, layout=before is None or (sized and len(str(text)) != len(str(before))))
        self._ratio.set_class(lines.ratio_below, "-below")
        self.border_subtitle = lines.params

    @property
    def text(self) -> str:
        """What the card says, line by line (for tests and screen readers of the log)."""
        if self._lines is None:
            return self.slot
        spark = self._spark.text
        lines = self._lines
        return "\n".join([
            self.slot,
            f"{lines.badge} {lines.blueprint}",
            lines.alpha,
            f"{lines.ratio} {spark}".rstrip(),
            lines.detail,
            lines.next,
            lines.params,
        ])

    def on_click(self) -> None:
        self.post_message(self.Selected(self.slot))
