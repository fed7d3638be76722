"""SVG snapshots of the dashboard (pytest-textual-snapshot): what an operator sees, pinned.

Deterministic by construction: a `StaticSource` over a recorded log, the "esper-dark" theme, no clock
on screen, and no key that raises a notification (a toast would race the screenshot). Each snapshot
waits for the app's first refresh to draw the state before it is taken.

Update after an intended change with `pytest tests/esper_tui/test_snapshots.py --snapshot-update`, and
look at the new SVGs (the failure report shows old and new side by side).
"""

from __future__ import annotations

import time

import pytest

from esper_tui.app import EsperApp
from esper_tui.screens import CrashScreen
from tests.esper_tui.static_source import StaticSource
from esper_tui.widgets import GatePanel, RunHeader, SlotCard

pytestmark = pytest.mark.timeout(60)

THEME = "esper-dark"
COMPACT, FULL = (80, 24), (120, 40)


def dashboard_app(events: list, run_dir: str | None = None) -> EsperApp:
    return EsperApp(StaticSource(events), refresh=30.0, theme=THEME, run_dir=run_dir)


async def _until(pilot, predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


def _drawn(app: EsperApp) -> bool:
    """The first refresh has run: header written, every slot's card composed and filled in."""
    try:
        board = app.dashboard
    except LookupError:
        return False
    cards = list(board.query(SlotCard))
    return (
        bool(board.query_one(RunHeader).text)
        and len(cards) == len(app.state.slots) > 0
        and all("\n" in card.text for card in cards)
    )


def wait_for_first_draw(*keys: str, screen: type | None = None):
    """A `run_before`: wait until the state is drawn (and `screen` is on top), then press `keys`."""

    async def run_before(pilot) -> None:
        app = pilot.app
        await _until(pilot, lambda: _drawn(app), "the first draw")
        if screen is not None:
            await _until(pilot, lambda: isinstance(app.screen, screen), f"the {screen.__name__}")
        if keys:
            await pilot.press(*keys)
        await pilot.pause()
        await pilot.pause()

    return run_before


def test_main_screen_compact_80x24(snap_compare, steered_events):
    """The finished steered run at 80×24: compact layout (no plots), stage names written out."""
    assert snap_compare(dashboard_app(steered_events), terminal_size=COMPACT, run_before=wait_for_first_draw())


def test_main_screen_120x40(snap_compare, steered_events):
    """The finished steered run at 120×40: cards, alpha and loss/accuracy curves, gate panel, event log."""
    assert snap_compare(dashboard_app(steered_events), terminal_size=FULL, run_before=wait_for_first_draw())


def test_gate_panel_with_failing_checks(snap_compare, steered_events):
    """The run paused at epoch 1 just after the operator's `advance` of block2 was rejected: G2 failed
    (too few epochs in stage, host gradients unmeasured "—", seed gradient norm unmeasured). block2 is
    selected with `2`, so the gate panel shows that verdict check by check, FAIL rows in words."""
    prefix = [e for e in steered_events if e.seq <= 16]
    assert [prefix[-2].kind, prefix[-1].kind] == ["gate_evaluated", "command_rejected"]
    assert prefix[-2].slot == "block2" and prefix[-2].gate == "G2" and not prefix[-2].passed

    async def selected_block2(pilot) -> None:
        await wait_for_first_draw("2")(pilot)
        panel = pilot.app.dashboard.query_one(GatePanel)
        await _until(pilot, lambda: panel.border_title == "gate: block2", "the gate panel of block2")
        assert panel.text.splitlines()[0] == "G2 -> BLENDING  FAILED (epoch 1)"

    assert snap_compare(dashboard_app(prefix), terminal_size=FULL, run_before=selected_block2)


def test_crash_screen(snap_compare, crashed_events):
    """The engine crashed at epoch 5: the crash screen with the error, where the log is, the traceback."""
    app = dashboard_app(crashed_events, run_dir="runs/crashed-run")
    assert snap_compare(app, terminal_size=FULL, run_before=wait_for_first_draw(screen=CrashScreen))
