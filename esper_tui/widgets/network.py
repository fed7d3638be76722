"""The whole network on one panel: every slot in host order with its seed and stage, where seeds were
fossilized into the host, parameters of host, seeds and budget, and the run's progress with an ETA.

`network_lines` decides what to say (pure, tested); the widget only draws it. Stages are written
out and styled by theme variable, so the panel reads without colour. Knows the state, never a screen.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from textual.content import Content
from textual.widgets import Static

from engine.lifecycle import LIVE_STAGES, Stage
from esper_tui.format import DASH, STAGES, alpha_bar, fmt_fixed, fmt_int
from esper_tui.state import CRASHED, FINISHED, PAUSED, STOPPED, RunState, SlotView

ETA_EPOCHS = 10  # recent epochs whose mean time predicts the rest
HEADINGS = ("slot", "stage", "blueprint", "seed", "params", "alpha", "in stage")
SLOT_WIDTH = 14  # a longer slot name (from the log) is cut with "…", so rows stay one line at 80 columns
PROGRESS_BAR = 20

# A line is its pieces: plain text, or (text, style) with a theme-variable style.
Piece = str | tuple[str, str]


@dataclass(frozen=True, slots=True)
class Params:
    """Parameter counts: the seedless host (None until the run log says), seeds by kind, the budget."""

    host: int | None
    fossilized: int
    live: int
    budget_fraction: float | None

    @property
    def seeds(self) -> int:
        return self.fossilized + self.live

    @property
    def budget(self) -> int | None:
        """All seeds together may have at most this many (G0), when the host's size is known."""
        if self.host is None or self.budget_fraction is None:
            return None
        return int(self.budget_fraction * self.host)


def params_of(state: RunState) -> Params:
    """The parameter counts of the run as last reported (seed counts from the slots' reports)."""
    fossilized = sum(v.report.params for v in state.slots.values() if v.stage is Stage.FOSSILIZED)
    live = sum(v.report.params for v in state.slots.values() if v.stage in LIVE_STAGES)
    gates = state.config.get("lifecycle", {}).get("gates", {}) if isinstance(state.config, dict) else {}
    fraction = gates.get("param_budget_fraction") if isinstance(gates, dict) else None
    return Params(state.host_params, fossilized, live, float(fraction) if isinstance(fraction, (int, float)) else None)


def epoch_seconds(epoch_times: Iterable[float], min_epoch_seconds: float = 0.0) -> list[float]:
    """How long the recent epochs took on the wall: each measured time, but at least the run's pace
    (`min_epoch_seconds`: a paced epoch waits out the rest, and that wait is not in epoch_time_s)."""
    return [max(t, min_epoch_seconds) for t in list(epoch_times)[-ETA_EPOCHS:]]


def eta_seconds(epoch_times: Iterable[float], epoch: int, planned: int | None,
                min_epoch_seconds: float = 0.0) -> float | None:
    """Mean wall time of the last `ETA_EPOCHS` epochs × the epochs left; None when either is unknown."""
    recent = epoch_seconds(epoch_times, min_epoch_seconds)
    if not recent or not planned:
        return None
    return sum(recent) / len(recent) * max(0, planned - epoch)


def fmt_duration(seconds: float | None) -> str:
    """"45s", "3m 07s", "2h 05m"; "—" when unknown."""
    if seconds is None:
        return DASH
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def slot_rows(slots: Iterable[SlotView]) -> list[tuple[str, ...]]:
    """One row per slot, in host order: slot, stage, blueprint, seed, params, alpha, epochs in stage."""
    rows = []
    for v in slots:
        empty = v.stage not in LIVE_STAGES and v.stage is not Stage.FOSSILIZED
        rows.append((
            _cut(v.slot, SLOT_WIDTH),
            str(v.stage),
            DASH if empty else (v.report.blueprint or DASH),
            DASH if empty else (v.report.seed_id or DASH),
            DASH if empty else fmt_int(v.report.params),
            DASH if empty else fmt_fixed(v.report.alpha),
            str(v.report.epochs_in_stage),
        ))
    return rows


def _stage_style(stage: str) -> str:
    return f"bold $stage-{stage.lower()}" if stage in STAGES else "bold"


def _table(rows: list[tuple[str, ...]]) -> list[list[Piece]]:
    table = [HEADINGS, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADINGS))]
    right = {4, 5, 6}  # numbers align right
    lines: list[list[Piece]] = []
    for n, row in enumerate(table):
        pieces: list[Piece] = []
        for i, cell in enumerate(row):
            text = cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            if n == 0:
                pieces.append((text, "bold"))
            elif i == 1:
                pieces.append((text, _stage_style(cell)))
            else:
                pieces.append(text)
            pieces.append("  " if i < len(row) - 1 else "")
        lines.append(pieces)
    return lines


def _params_lines(p: Params) -> list[list[Piece]]:
    host = fmt_int(p.host) if p.host is not None else DASH
    host_note = "the seedless network" if p.host is not None else "not in this run log (run_started.host_params)"
    share = f", {p.seeds / p.host:.0%} of the host" if p.host else ""
    fraction = DASH if p.budget_fraction is None else f"{p.budget_fraction:g}"
    if p.budget is not None:
        left = p.budget - p.seeds
        budget_note = (f"{fraction} × host  {alpha_bar(p.seeds / p.budget if p.budget else 1.0)}  "
                       + (f"{left:,} left" if left >= 0 else f"{-left:,} over"))
    else:
        budget_note = f"seeds may total {fraction} × the host's"
    total = DASH if p.host is None else fmt_int(p.host + p.seeds)
    width = max(len(host), len(fmt_int(p.seeds)), len(fmt_int(p.budget)), len(total))
    return [
        [("parameters", "bold")],
        [f"  host    {host:>{width}}  {host_note}"],
        [f"  seeds   {fmt_int(p.seeds):>{width}}  fossilized {p.fossilized:,}, live {p.live:,}{share}"],
        [f"  budget  {fmt_int(p.budget):>{width}}  {budget_note}"],
        [f"  total   {total:>{width}}  host and seeds"],
    ]


def _pace(state: RunState) -> float:
    pace = state.config.get("min_epoch_seconds") if isinstance(state.config, dict) else None
    return float(pace) if isinstance(pace, (int, float)) and pace > 0 else 0.0


def _progress_lines(state: RunState) -> list[list[Piece]]:
    planned, epoch = state.planned_epochs, state.epoch
    if planned:
        done = min(1.0, epoch / planned)
        where = f"epoch {epoch}/{planned}  {alpha_bar(done, PROGRESS_BAR)}  {done:.0%}"
    else:
        where = f"epoch {epoch}"
    pace = _pace(state)
    recent = epoch_seconds(state.epoch_times, pace)
    if recent:
        paced = f", paced to {pace:g} s" if pace and any(t < pace for t in list(state.epoch_times)[-ETA_EPOCHS:]) else ""
        how = f"{sum(recent) / len(recent):.2g} s/epoch over the last {len(recent)}{paced}"
    else:
        how = "no epoch timed yet"
    if state.status in (FINISHED, STOPPED):
        eta = f"done ({state.status.lower()})"
    elif state.status == CRASHED:
        eta = "none: the run crashed"
    else:
        eta = fmt_duration(eta_seconds(state.epoch_times, epoch, planned, pace))
        if state.status == PAUSED:
            eta += " of training left (paused)"
    return [
        [("progress", "bold")],
        [f"  {where}"],
        [f"  ETA {eta}  ({how})"],
    ]


def network_lines(state: RunState) -> list[list[Piece]]:
    """Everything the panel says, line by line (each a list of pieces)."""
    slots = list(state.slots.values())
    topology = state.topology or "host"
    lines: list[list[Piece]] = [
        [f"{topology} host, {len(slots)} slot{'' if len(slots) == 1 else 's'} in host order (input to output)"],
        *_table(slot_rows(slots)),
    ]
    fossils = [f"{v.slot} ({v.report.blueprint or DASH})" for v in slots if v.stage is Stage.FOSSILIZED]
    lines.append([f"fossilized into the host: {', '.join(fossils) if fossils else 'none yet'}"])
    lines += _params_lines(params_of(state))
    lines += _progress_lines(state)
    return lines


def _plain(lines: list[list[Piece]]) -> str:
    return "\n".join("".join(p if isinstance(p, str) else p[0] for p in line).rstrip() for line in lines)


def network_text(state: RunState) -> str:
    """The panel as plain text (what a user without colour reads)."""
    return _plain(network_lines(state))


class NetworkView(Static):
    """The whole-network panel (key `w` on the dashboard). `show(state)` redraws it when it changed."""

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("", name=name, id=id, classes=classes, markup=False)
        self._drawn: str | None = None

    def show(self, state: RunState, selected: str | None = None) -> None:
        """Redraw from the state. `selected` is accepted for a uniform widget API and unused."""
        lines = network_lines(state)
        text = _plain(lines)
        if text == self._drawn:
            return
        self._drawn = text
        pieces: list[Piece] = []
        for n, line in enumerate(lines):
            if n:
                pieces.append("\n")
            pieces += line
        self.update(Content.assemble(*pieces))

    @property
    def text(self) -> str:
        """The panel as drawn, without styles."""
        return self._drawn or ""


__all__ = ["NetworkView", "Params", "epoch_seconds", "eta_seconds", "fmt_duration", "network_lines", "network_text", "params_of"]
