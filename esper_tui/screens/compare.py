"""The compare screen: two runs' val accuracy and val loss overlaid, and their lifecycle moves side by
side, epoch by epoch (`esper-tui compare RUN_A RUN_B`). Drawing only: `esper_tui.compare` decides."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from esper_tui.compare import Comparison
from esper_tui.widgets.alpha_plot import MARKERS, ThemedPlot, legend


class CompareCurves(ThemedPlot):
    """One quantity of both runs by epoch (`field`: "val_accuracy" or "val_loss")."""

    def __init__(self, field: str, title: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.field, self.title = field, title

    def show(self, comparison: Comparison, selected: str | None = None) -> None:  # type: ignore[override]
        self._last = (comparison, selected)  # type: ignore[assignment]
        plt = self.plt
        plt.clear_figure()
        sides = (comparison.a, comparison.b)
        plt.title(f"{self.title}: {legend([s.name for s in sides])}")
        colours = self.line_colours()
        for i, side in reversed(list(enumerate(sides))):
            points = [(e, v) for e, v in zip(side.epochs, getattr(side, self.field)) if v is not None]
            if points:
                plt.plot([e for e, _ in points], [v for _, v in points], color=colours[i % len(colours)],
                         marker=MARKERS[i % len(MARKERS)])
        last = max([*comparison.a.epochs, *comparison.b.epochs, 1])
        self.draw_epochs((1, last))
        self.refresh()


def moves_lines(comparison: Comparison) -> list[str]:
    """Epoch by epoch, what each run's seeds did ("e5  A: block0 → TRAINING (gate)  |  B: —")."""
    a, b = comparison.a, comparison.b
    lines = []
    for epoch in sorted({m.epoch for m in a.moves} | {m.epoch for m in b.moves}):
        said = ["; ".join(m.words().split(" ", 1)[1] for m in side.moves if m.epoch == epoch) or "—"
                for side in (a, b)]
        mark = " " if said[0] == said[1] else "≠"
        lines.append(f"{mark} e{epoch:<4} {a.name}: {said[0]}  |  {b.name}: {said[1]}")
    return lines or ["neither run moved a seed"]


class CompareScreen(Screen[None]):
    """Two runs compared; q or Escape closes."""

    BINDINGS = [Binding("q,escape", "close", "quit")]
    DEFAULT_CSS = """
    #compare-header { height: auto; padding: 0 1; }
    #compare-plots { height: 1fr; min-height: 8; }
    #compare-plots > CompareCurves { width: 1fr; }
    #compare-moves { height: 1fr; border: round $primary; padding: 0 1; }
    """

    def __init__(self, comparison: Comparison) -> None:
        super().__init__(id="compare")
        self.comparison = comparison

    def compose(self) -> ComposeResult:
        c = self.comparison
        parted = c.parted_at()
        facts = [c.relation() or f"{c.a.name} and {c.b.name}",
                 f"the journeys part at epoch {parted}" if parted is not None else "the journeys are identical"]
        for side in (c.a, c.b):
            final = side.final()
            facts.append(f"{side.name}: final val acc {final[1]:.1f}% (epoch {final[0]})" if final
                         else f"{side.name}: no epoch completed")
        yield Static("  ·  ".join(facts), id="compare-header", markup=False)
        with Horizontal(id="compare-plots"):
            yield CompareCurves("val_accuracy", "val accuracy %", id="compare-accuracy")
            yield CompareCurves("val_loss", "val loss", id="compare-loss")
        with VerticalScroll(id="compare-moves"):
            yield Static("\n".join(moves_lines(c)), markup=False, id="compare-moves-text")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#compare-moves").border_title = "lifecycle moves (≠: the runs differ)"
        for plot in self.query(CompareCurves):
            plot.show(self.comparison)

    def action_close(self) -> None:
        self.dismiss(None)
