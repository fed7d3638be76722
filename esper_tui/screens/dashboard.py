"""The main screen: header, one card per slot, alpha and metric curves, the gate panel, the event log.

It lays the widgets out, owns the keys, and hands every operator action to the app (which owns the
source). Widgets get the reduced state pushed down via `show`; they post messages up.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Input

from esper_tui.state import RunState
from esper_tui.widgets import AlphaPlot, EventLog, GatePanel, MetricsPlot, RunHeader, SlotCard

if TYPE_CHECKING:
    from esper_tui.app import EsperApp

PLOT_INTERVAL = 1.0  # seconds between plot redraws
_ID_SAFE = re.compile(r"[A-Za-z0-9_-]+")
# Smaller than this and the screen switches to the compact layout (no plots, short cards).
COMPACT_WIDTH, COMPACT_HEIGHT = 100, 30

KEYS: list[tuple[str, str, str, bool]] = [
    # (keys, action, description, shown in the footer)
    ("up,k", "select(-1)", "previous slot", False),
    ("down,j", "select(1)", "next slot", False),
    ("g", "germinate", "germinate", True),
    ("a", "advance", "advance", True),
    ("A", "force_advance", "force-advance", True),
    ("f", "fossilize", "fossilize", False),
    ("c", "cull", "cull", True),
    ("p", "pause_resume", "pause/resume", True),
    ("n", "step_epoch", "step epoch", False),
    ("o", "autopilot", "autopilot", False),
    ("slash", "filter", "filter log", False),
    ("t", "next_theme", "theme", False),
    ("question_mark", "help", "help", True),
    ("q", "quit", "quit", True),
    # Replay only (live runs answer with a hint): play/pause, speed, step, seek, start/end.
    ("space", "replay('toggle')", "replay: play/pause", False),
    ("plus,equals_sign", "replay('faster')", "replay: faster", False),
    ("minus", "replay('slower')", "replay: slower", False),
    ("full_stop", "replay('step')", "replay: step one epoch", False),
    ("home", "replay('start')", "replay: jump to start", False),
    ("end", "replay('end')", "replay: jump to end", False),
    ("e", "seek", "replay: seek to epoch", False),
]


def card_id(slot: str) -> str | None:
    """The DOM id of a slot's card ("card-block1"), or None when the slot's name (it comes from the
    log) cannot be part of one: such a card is found by its `slot` like any other."""
    return f"card-{slot}" if _ID_SAFE.fullmatch(slot) else None


class DashboardScreen(Screen[None]):
    """Everything about one run on one screen."""

    BINDINGS = [Binding(keys, action, desc, show=shown) for keys, action, desc, shown in KEYS] + [
        Binding(str(i), f"select_index({i - 1})", f"slot {i}", show=False) for i in range(1, 10)
    ]

    def __init__(self) -> None:
        super().__init__(id="dashboard")
        self.selected: str | None = None
        self._slot_names: tuple[str, ...] = ()
        self._state: RunState | None = None
        self._plotted_at = float("-inf")
        self._plotted_for: str | None = None

    @property
    def esper(self) -> EsperApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        yield Horizontal(id="cards")
        with Horizontal(id="plots"):
            yield AlphaPlot(id="alpha-plot")
            yield MetricsPlot(id="metrics-plot")
        with Horizontal(id="bottom"):
            yield GatePanel(id="gates")
            yield EventLog(id="events")
        yield Input(placeholder="filter the event log (Enter to apply, Escape to clear)", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self._apply_layout(self.size.width, self.size.height)

    def on_resize(self, event) -> None:
        self._apply_layout(event.size.width, event.size.height)

    def _apply_layout(self, width: int, height: int) -> None:
        self.set_class(width < COMPACT_WIDTH or height < COMPACT_HEIGHT, "compact")

    # ------------------------------------------------------------------ attributes down
    def show(self, state: RunState, status: str | None = None) -> None:
        """Redraw from the reduced state (called by the app at most `refresh` times a second)."""
        self._state = state
        names = tuple(state.slots)
        if names != self._slot_names:
            self._rebuild_cards(names)
        if self.selected not in state.slots and names:
            self.selected = names[0]
        self.query_one(RunHeader).show(state, status_override=status)
        for card in self.query(SlotCard):
            card.show(state, self.selected)
        self.query_one(GatePanel).show(state, self.selected)
        self.query_one(EventLog).show(state, self.selected)
        # Plots are the costly part of a frame (plotext rebuilds the whole figure): at most once a
        # second, unless the selection changed. Everything else follows every refresh.
        now = time.monotonic()
        if not self.has_class("compact") and (now - self._plotted_at >= PLOT_INTERVAL
                                               or self.selected != self._plotted_for):
            self._plotted_at, self._plotted_for = now, self.selected
            self.query_one(AlphaPlot).show(state, self.selected)
            self.query_one(MetricsPlot).show(state, self.selected)

    def _rebuild_cards(self, names: tuple[str, ...]) -> None:
        self._slot_names = names
        cards = self.query_one("#cards", Horizontal)
        cards.remove_children()
        cards.mount_all(SlotCard(name, id=card_id(name)) for name in names)

    def _redraw(self) -> None:
        if self._state is not None:
            self.show(self._state, self.esper.status_override())

    # ------------------------------------------------------------------ messages up
    @on(SlotCard.Selected)
    def _card_selected(self, event: SlotCard.Selected) -> None:
        self.selected = event.slot
        self._redraw()

    # ------------------------------------------------------------------ keys
    def action_select(self, delta: int) -> None:
        if not self._slot_names:
            return
        i = self._slot_names.index(self.selected) if self.selected in self._slot_names else 0
        self.selected = self._slot_names[(i + delta) % len(self._slot_names)]
        self._redraw()

    def action_select_index(self, index: int) -> None:
        if index < len(self._slot_names):
            self.selected = self._slot_names[index]
            self._redraw()

    def action_germinate(self) -> None:
        self.esper.germinate(self.selected)

    def action_advance(self) -> None:
        self.esper.slot_command("advance", self.selected)

    def action_force_advance(self) -> None:
        self.esper.confirm_then(
            f"Force {self.selected} past its failing gate? The bypass is recorded as forced.",
            "force_advance", slot=self.selected,
        )

    def action_fossilize(self) -> None:
        self.esper.slot_command("fossilize", self.selected)

    def action_cull(self) -> None:
        self.esper.confirm_then(
            f"Cull the seed in {self.selected}? It is removed and the slot is embargoed.",
            "cull", slot=self.selected, reason="operator cull from the dashboard",
        )

    def action_pause_resume(self) -> None:
        self.esper.pause_resume()

    def action_step_epoch(self) -> None:
        self.esper.command("step_epoch")

    def action_autopilot(self) -> None:
        self.esper.toggle_autopilot()

    def action_next_theme(self) -> None:
        self.esper.next_theme()

    def action_help(self) -> None:
        self.esper.show_help()

    def action_quit(self) -> None:
        self.esper.request_quit()

    def action_replay(self, what: str) -> None:
        self.esper.replay_control(what)

    def action_filter(self) -> None:
        self._ask("filter", "filter the event log (Enter to apply, Escape to clear)")

    def action_seek(self) -> None:
        if self.esper.replay_source() is None:
            self.esper.replay_control("seek")  # explains that seeking is for replays
            return
        self._ask("seek", "seek to epoch (Enter)")

    def _ask(self, purpose: str, placeholder: str) -> None:
        box = self.query_one("#filter", Input)
        box.placeholder = placeholder
        box.value = self.query_one(EventLog).filter if purpose == "filter" else ""
        box.purpose = purpose  # type: ignore[attr-defined]
        box.display = True
        box.focus()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.input.display = False
        if getattr(event.input, "purpose", "filter") == "seek":
            if event.value.strip().isdigit():
                self.esper.replay_seek(int(event.value.strip()))
            else:
                self.notify(f"not an epoch number: {event.value!r}", severity="warning", markup=False)
            return
        self.query_one(EventLog).set_filter(event.value)
        self._redraw()

    def key_escape(self) -> None:
        box = self.query_one("#filter", Input)
        if box.display:
            box.value = ""
            box.display = False
            self.query_one(EventLog).set_filter("")
            self._redraw()
