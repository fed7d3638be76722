"""The main screen: header, one card per slot, alpha and metric curves, the gate panel, the event log,
and (key `w`) the whole-network view in their place.

It lays the widgets out and owns the keys. What it needs comes down as attributes (`show`: the state,
the typed status, the operator's controls); what the operator asks goes up as messages
(`CommandRequested`, `SeekRequested`). It never imports the app: app-wide keys (theme, help, quit,
replay) are bound straight to the app's actions ("app.help").
"""

from __future__ import annotations

import re
import time

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input

from engine.lifecycle import Stage
from esper_tui.answers import pending_line
from esper_tui.keys import KEYS, SLOT_DIGITS, key_for
from esper_tui.messages import CommandRequested, SeekRequested
from esper_tui.screens.confirm import ConfirmScreen
from esper_tui.screens.picker import BlueprintPicker
from esper_tui.state import PAUSED, RunState
from esper_tui.status import Controls, Status
from esper_tui.widgets import AlphaPlot, EventLog, GatePanel, MetricsPlot, NetworkView, RunHeader, SlotCard, Timeline

PLOT_INTERVAL = 1.0  # seconds between plot redraws
_ID_SAFE = re.compile(r"[A-Za-z0-9_-]+")
# Smaller than this and the screen switches to the compact layout (no plots, short cards).
COMPACT_WIDTH, COMPACT_HEIGHT = 100, 30
# Stages without a seed to advance, fossilize or cull (CULLED and EMBARGOED: the seed is gone).
NO_SEED = frozenset({Stage.DORMANT, Stage.CULLED, Stage.EMBARGOED})


def card_id(slot: str) -> str | None:
    """The DOM id of a slot's card ("card-block1"), or None when the slot's name (it comes from the
    log) cannot be part of one: such a card is found by its `slot` like any other."""
    return f"card-{slot}" if _ID_SAFE.fullmatch(slot) else None


def no_seed_reason(slot: str, stage: Stage, verb: str) -> str | None:
    """Why `verb` makes no sense on a slot in `stage` ("block0 holds no seed: nothing to cull"), or
    None when the slot holds a seed (the engine judges the rest and answers with its reason)."""
    if stage not in NO_SEED:
        return None
    why = "" if stage is Stage.DORMANT else f" (it is {stage})"
    return f"{slot} holds no seed{why}: nothing to {verb}"


class DashboardScreen(Screen[None]):
    """Everything about one run on one screen."""

    BINDINGS = [Binding(k.keys, k.action, k.description, show=k.footer) for k in KEYS] + [
        Binding(str(i), f"select_index({i - 1})", f"slot {i}", show=False) for i in SLOT_DIGITS
    ]

    def __init__(self, replaying: bool = False) -> None:
        """`replaying`: a replay's dashboard (its first frame already shows the replay keys)."""
        super().__init__(id="dashboard")
        self.selected: str | None = None
        self.controls = Controls(replaying=replaying)
        self._slot_names: tuple[str, ...] = ()
        self._state: RunState | None = None
        self._status: Status | None = None
        self._plotted_at = float("-inf")
        self._plot_pending = False
        self._pending_shown: str | None = None  # what the event log's border says is on its way
        self._plotted_for: str | None = None
        self._keys_for: bool | None = replaying  # the `replaying` the footer's keys were last shown for

    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        yield Timeline(id="timeline")
        yield Horizontal(id="cards")
        with Horizontal(id="plots"):
            yield AlphaPlot(id="alpha-plot")
            yield MetricsPlot(id="metrics-plot")
        with Horizontal(id="bottom"):
            yield GatePanel(id="gates")
            yield EventLog(id="events")
        with VerticalScroll(id="network-pane"):
            yield NetworkView(id="network")
        yield Input(placeholder="filter the event log (Enter to apply, Escape to clear)", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.query_one(Timeline).display = self.controls.replaying
        self.query_one("#network-pane").border_title = "network"
        self._apply_layout(self.size.width, self.size.height)

    def on_resize(self, event) -> None:
        self._apply_layout(event.size.width, event.size.height)

    def _apply_layout(self, width: int, height: int) -> None:
        compact = width < COMPACT_WIDTH or height < COMPACT_HEIGHT
        self.set_class(compact, "compact")
        # At 80 columns the footer's keys only fit without Textual's spacing and its "^p palette"
        # (the palette is in the help screen): `? help` and `q quit` must never fall off the right.
        footer = self.query_one(Footer)
        footer.compact = compact
        footer.show_command_palette = not compact

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The operator's keys work (and show in the footer) only for a live run, the replay keys
        only in a replay (keys.Key.mode)."""
        key = key_for(action)
        return key is None or key.offered(self.controls.replaying)

    @property
    def network_shown(self) -> bool:
        """Whether the whole-network view is shown in place of the curves, the gate panel and the log."""
        return self.has_class("-network")

    # ------------------------------------------------------------------ attributes down
    def show(self, state: RunState, status: Status | None = None, controls: Controls | None = None) -> None:
        """Redraw from the reduced state (called by the app at most `refresh` times a second)."""
        self._state, self._status = state, status
        if controls is not None:
            self.controls = controls
        if self._keys_for is not self.controls.replaying and self.is_mounted:
            # The footer: replay keys in a replay, the operator's in a live run (check_action).
            self._keys_for = self.controls.replaying
            self.refresh_bindings()
        names = tuple(state.slots)
        if names != self._slot_names:
            self._rebuild_cards(names)
        if self.selected not in state.slots and names:
            self.selected = names[0]
        self.query_one(RunHeader).show(state, status_override=status)
        if self.controls.replaying:
            last = state.log_last_epoch or max(state.epoch, 1)
            self.query_one(Timeline).show(state.timeline, last, state.epoch)
        for card in self.query(SlotCard):
            card.show(state, self.selected)
        self.query_one(GatePanel).show(state, self.selected)
        events = self.query_one(EventLog)
        events.show(state, self.selected)
        # The answer will appear in this log: what is on its way to the engine is said on its border.
        pending = pending_line(self.controls.pending)
        if pending != self._pending_shown:  # setting a border title repaints the whole panel, even unchanged
            self._pending_shown = pending
            events.border_subtitle = pending
        if self.network_shown:
            self.query_one(NetworkView).show(state)
            return
        # Plots are the costly part of a frame (plotext rebuilds the whole figure): at most once a
        # second, unless the selection changed. Everything else follows every refresh.
        now = time.monotonic()
        if self.has_class("compact"):
            return
        if now - self._plotted_at >= PLOT_INTERVAL or self.selected != self._plotted_for:
            self._plotted_at, self._plotted_for = now, self.selected
            self.query_one(AlphaPlot).show(state, self.selected)
            self.query_one(MetricsPlot).show(state, self.selected)
        elif not self._plot_pending:
            # Skipped: draw this state once the interval is over, or the last frame (a replay's
            # end, a paused run) would stay unplotted until something else changes.
            self._plot_pending = True
            self.set_timer(PLOT_INTERVAL - (now - self._plotted_at), self._trailing_plot)

    def _trailing_plot(self) -> None:
        self._plot_pending = False
        self._redraw()

    def _rebuild_cards(self, names: tuple[str, ...]) -> None:
        self._slot_names = names
        cards = self.query_one("#cards", Horizontal)
        cards.remove_children()
        cards.mount_all(SlotCard(name, id=card_id(name)) for name in names)

    def _redraw(self) -> None:
        if self._state is not None:
            self.show(self._state, self._status)

    # ------------------------------------------------------------------ messages up
    @on(SlotCard.Selected)
    def _card_selected(self, event: SlotCard.Selected) -> None:
        self.selected = event.slot
        self._redraw()

    def _request(self, command: str, description: str = "", **fields: object) -> None:
        self.post_message(CommandRequested(command, fields, description))

    def _slot_request(self, command: str, verb: str, question: str | None = None, **fields: object) -> None:
        """A command on the selected slot: said to be pointless on an empty slot, confirmed first
        when `question` is given, then posted to the app."""
        slot = self.selected
        description = f"{command} {slot}"
        if not self.controls.steerable:
            self._request(command, description, slot=slot, **fields)  # the app says why nothing can be sent
            return
        if slot is None or self._state is None or slot not in self._state.slots:
            self.notify("no slot selected", severity="warning")
            return
        empty = no_seed_reason(slot, self._state.slots[slot].stage, verb)
        if empty is not None:
            self.notify(empty, severity="warning")
            return
        if question is None:
            self._request(command, description, slot=slot, **fields)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._request(command, description, slot=slot, **fields)

        self.app.push_screen(ConfirmScreen(question), answered)

    # ------------------------------------------------------------------ keys
    def action_select(self, delta: int) -> None:
        """`↑`/`↓`, `k`/`j`: the previous or next slot (wrapping)."""
        if not self._slot_names:
            return
        i = self._slot_names.index(self.selected) if self.selected in self._slot_names else 0
        self.selected = self._slot_names[(i + delta) % len(self._slot_names)]
        self._redraw()

    def action_select_index(self, index: int) -> None:
        """`1`–`9`: the slot with that number, when there is one."""
        if index < len(self._slot_names):
            self.selected = self._slot_names[index]
            self._redraw()

    def action_germinate(self) -> None:
        """`g`: pick a blueprint, then germinate it into the selected slot."""
        slot = self.selected
        if not self.controls.steerable:
            self._request("germinate", f"germinate {slot}", slot=slot)  # the app says why not
            return
        if slot is None:
            self.notify("no slot selected", severity="warning")
            return
        blueprints = self._state.blueprints if self._state is not None else {}
        if not blueprints:
            self.notify("this run did not list its blueprints", severity="warning")
            return

        def chosen(name: str | None) -> None:
            if name:
                self._request("germinate", f"germinate {slot} {name}", slot=slot, blueprint=name)

        self.app.push_screen(BlueprintPicker(slot, blueprints), chosen)

    def action_advance(self) -> None:
        """`a`: the next stage, through its gate."""
        self._slot_request("advance", "advance")

    def action_force_advance(self) -> None:
        """`A`: the next stage past a failing gate (asks first; recorded as forced)."""
        self._slot_request("force_advance", "advance",
                           f"Force {self.selected} past its failing gate? The bypass is recorded as forced.")

    def action_fossilize(self) -> None:
        """`f`: make the seed part of the host (through G5)."""
        self._slot_request("fossilize", "fossilize")

    def action_cull(self) -> None:
        """`c`: remove the seed (asks first); the slot is embargoed."""
        self._slot_request("cull", "cull", f"Cull the seed in {self.selected}? It is removed and the slot is embargoed.",
                           reason="operator cull from the dashboard")

    def action_pause_resume(self) -> None:
        """`p`: pause a running engine, resume a paused one."""
        paused = self._state is not None and self._state.status == PAUSED
        self._request("resume" if paused else "pause")

    def action_step_epoch(self) -> None:
        """`n`: train one epoch, then pause again."""
        self._request("step_epoch")

    def action_autopilot(self) -> None:
        """`o`: switch the autopilot off when it is on, on when it is off."""
        enabled = not (self._state is not None and bool(self._state.autopilot))
        self._request("autopilot", f"autopilot {'on' if enabled else 'off'}", enabled=enabled)

    def action_network(self) -> None:
        """`w`: the whole-network view in place of the curves, gate panel and log; `w` or Escape returns."""
        self.toggle_class("-network")
        self._redraw()

    def action_filter(self) -> None:
        """`/`: filter the event log."""
        self._ask("filter", "filter the event log (Enter to apply, Escape to clear)")

    def action_seek(self) -> None:
        """`e`: ask for an epoch to seek a replay to (a replay key: check_action keeps it off a live run)."""
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
                self.post_message(SeekRequested(int(event.value.strip())))
            else:
                self.notify(f"not an epoch number: {event.value!r}", severity="warning", markup=False)
            return
        self.query_one(EventLog).set_filter(event.value)
        self._redraw()

    def key_escape(self) -> None:
        """Escape closes the filter box (clearing the filter), else the network view, else clears a
        filter that is applied (the log shows everything again)."""
        box = self.query_one("#filter", Input)
        if box.display:
            box.value = ""
            box.display = False
            self.query_one(EventLog).set_filter("")
            self._redraw()
        elif self.network_shown:
            self.action_network()
        elif self.query_one(EventLog).filter:
            self.query_one(EventLog).set_filter("")
            self._redraw()
