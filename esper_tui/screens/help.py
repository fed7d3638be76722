"""The help screen: what the dashboard shows (the lifecycle, the gates, credit), how to filter the event
log, and the keys. Built from the engine's own defaults and the run's config (gate thresholds) and from
the dashboard's key table (`esper_tui.keys`), so it cannot drift from either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from engine.config import CreditConfig, LifecycleConfig
from engine.lifecycle import probation_limit
from engine.telemetry.describe import CATEGORIES
from esper_tui.keys import help_rows

# One line per stage, in lifecycle order; the failure path after the happy one.
STAGE_LINES = (
    ("DORMANT", "empty: the host runs as if the slot were not there"),
    ("GERMINATED", "a seed built from a blueprint, not run yet"),
    ("TRAINING", "learns behind the host; the output is unchanged"),
    ("BLENDING", "mixed into the output while alpha ramps 0 -> 1"),
    ("SHADOWING", "at full strength (alpha 1), watched for stability"),
    ("PROBATIONARY", "on trial for at most {probation}"),
    ("FOSSILIZED", "kept for good: plain host from now on"),
    ("CULLED", "removed: failed its trial, or by operator or governor"),
    ("EMBARGOED", "the slot rests {embargo} epochs, then is DORMANT again"),
)


def _lifecycle(config: Mapping[str, Any] | None) -> LifecycleConfig:
    try:
        return LifecycleConfig.model_validate((config or {}).get("lifecycle") or {})
    except ValueError:  # a log from another version: explain with today's defaults
        return LifecycleConfig()


def _credit(config: Mapping[str, Any] | None) -> CreditConfig:
    try:
        return CreditConfig.model_validate((config or {}).get("credit") or {})
    except ValueError:
        return CreditConfig()


def gate_lines(life: LifecycleConfig) -> list[tuple[str, str]]:
    """(gate, what it checks) for G0–G5 with this run's thresholds (engine.gates)."""
    g = life.gates
    ratio = ", ".join(f"{t} {v:g}" for t, v in g.ratio_threshold.items())
    if g.ratio_mode == "relative":
        ratio = f"{g.relative_fraction:.0%} of its running mean"
    return [
        ("G0", f"-> GERMINATED: slot free, blueprint known, shape kept, seeds ≤ {g.param_budget_fraction:g}× host "
               "params"),
        ("G1", "-> TRAINING: seed built on the host's device and dtype, finite on a probe"),
        ("G2", f"-> BLENDING: ≥ {g.g2_min_epochs} epochs training, gradient ratio ≥ {ratio}, gradients finite"),
        ("G3", f"-> SHADOWING: alpha ≥ {g.g3_min_alpha:g} and ≥ {g.g3_min_epochs} epochs blending"),
        ("G4", f"-> PROBATIONARY: ≥ {g.g4_min_epochs} epochs, loss finite, val loss at most "
               f"{g.g4_val_loss_tolerance:.0%} above before blending, credit ≥ {g.g4_min_counterfactual:g}"),
        ("G5", f"-> FOSSILIZED: ≥ {g.g5_min_epochs} epochs, credit's lower bound ≥ {g.g5_min_counterfactual:g} "
               "point, seed healthy"),
    ]


def _table(rows: Sequence[tuple[str, str]]) -> Table:
    # Two columns: the name never wraps, the words wrap under themselves (a hanging indent).
    table = Table(box=None, show_header=False, padding=(0, 1), expand=False)
    table.add_column(no_wrap=True, style="bold")
    table.add_column(overflow="fold")
    for name, words in rows:
        table.add_row(name, words)
    return table


def guide_sections(config: Mapping[str, Any] | None = None) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """The teaching part of the help as (heading, paragraph, rows): lifecycle, gates, credit and the
    event-log filter. `config` is the run's (from `run_started`); without it, the engine's defaults."""
    life, credit = _lifecycle(config), _credit(config)
    rule = f"max({life.probation_min_epochs}, {life.probation_fraction:.0%} of the run)"
    probation = f"{rule} epochs"
    planned = (config or {}).get("epochs")
    if isinstance(planned, int) and planned > 0:
        limit = probation_limit(planned, life.probation_min_epochs, life.probation_fraction)
        probation = f"{limit} epochs: {rule}"
    whose = "this run" if config else "by default"
    stages = [(stage, what.format(probation=probation, embargo=life.embargo_epochs)) for stage, what in STAGE_LINES]
    low = life.gates.g5_min_counterfactual
    return [
        ("Seeds and their lifecycle",
         "A seed is a small module grown into a slot of the host network. It moves down these stages, each "
         "step guarded by a gate. The autopilot drives it; you may too (keys below).", stages),
        ("Gates: each guards the step into the stage it names", "", gate_lines(life)),
        ("Credit (cf on the cards)",
         "How many points of val accuracy the seed adds: the network with it against the same network "
         f"without it (a counterfactual). \"cf +1.8 [+0.9, +2.7]\" is the estimate and its {credit.confidence:.0%} "
         f"interval; the gate panel names the method ({whose}: {credit.method}). G5 needs the lower bound "
         f"≥ {low:g}; when even the upper bound is ≤ 0 in probation, the seed is culled at once.", []),
        ("Event log filter: / then Enter", "", [
            ("words", "lines that contain them, any case: block2, G4, cull"),
            ("kind:NAME", "one kind only (kind:op,auto: either); -kind:NAME hides one"),
            ("kinds", " ".join(CATEGORIES[:-1])),
            ("Escape", "in the filter box: clears the filter"),
        ]),
    ]


def guide(config: Mapping[str, Any] | None = None) -> Group:
    """The guide as one renderable: bold headings, paragraphs, and two-column tables that wrap."""
    parts: list[Any] = []
    for heading, paragraph, rows in guide_sections(config):
        parts.append(Text(heading, style="bold"))
        if paragraph:
            parts.append(Text(paragraph))
        if rows:
            parts.append(_table(rows))
        parts.append(Text(""))
    return Group(*parts)


def keys_text(keys: Sequence[tuple[str, str]]) -> str:
    """The keys as rows: "  g              germinate"."""
    lines = ["Keys"]
    lines += [f"  {key:<14} {what}" for key, what in keys]
    lines += ["  ctrl+p         command palette (every action by name)", "",
              "Escape, q or ? closes this help; arrows and PgUp/PgDn scroll it."]
    return "\n".join(lines)


class HelpScreen(ModalScreen[None]):
    """The guide and the keys, scrollable (it fits 80x24 by scrolling); Escape, q or ? closes it.

    `keys` are (keys as typed, what they do), by default the dashboard's (`esper_tui.keys`); `config`
    is the run's, so the gates read with the thresholds this run uses.
    """

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, keys: Sequence[tuple[str, str]] | None = None, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(classes="dialog")
        self.keys = list(keys) if keys is not None else help_rows()
        self.config = config

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static(guide(self.config), id="help-guide")
            yield Static(keys_text(self.keys), id="help-text", markup=False)
