"""The key table (esper_tui/keys.py): every key runs a real action, is named as typed, and the footer
keeps what an operator needs at 80×24."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from esper_tui.app import EsperApp
from esper_tui.keys import KEYS, help_rows, key_label
from esper_tui.screens import DashboardScreen
from esper_tui.widgets import SlotCard
from tests.esper_tui.static_source import StaticSource

ROOT = Path(__file__).resolve().parents[2]


def action_name(action: str) -> tuple[str, str]:
    """("app", "help") for "app.help", ("dashboard", "select") for "select(-1)"."""
    name = action.split("(", 1)[0]
    return ("app", name[4:]) if name.startswith("app.") else ("dashboard", name)


@pytest.mark.parametrize("key", KEYS, ids=lambda k: k.keys)
def test_every_key_runs_an_action_that_exists(key):
    where, name = action_name(key.action)
    owner = EsperApp if where == "app" else DashboardScreen
    assert callable(getattr(owner, f"action_{name}", None)), f"{key.keys}: no {owner.__name__}.action_{name}"


def test_keys_are_named_as_typed_and_listed_once():
    assert key_label("plus,equals_sign") == "+,=" and key_label("question_mark") == "?"
    rows = help_rows()
    assert rows[:3] == [("up,k", "previous slot"), ("down,j", "next slot"), ("1-9", "select slot N")]
    assert not [label for label, _ in rows if "_" in label]
    bound = [k for key in KEYS for k in key.keys.split(",")]
    assert len(bound) == len(set(bound)), "a key bound twice"
    assert ("w", "network view") in rows


def test_the_key_table_needs_no_textual():
    """keys.py is data: the app, the dashboard and the help read it without importing each other."""
    code = "import sys, json; import esper_tui.keys; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in json.loads(out.stdout)}
    assert "textual" not in loaded and "esper_tui.app" not in json.loads(out.stdout)


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_the_footer_keeps_help_and_quit_on_screen(steered_events, size):
    """At 80×24 the footer used to run off the right edge: `? help` and `q quit` were not on screen."""
    app = EsperApp(StaticSource(steered_events), refresh=30.0)
    async with app.run_test(size=size) as pilot:
        deadline = time.monotonic() + 10
        while len(app.dashboard.query(SlotCard)) < 2 or "q quit" not in _last_line(app):
            assert time.monotonic() < deadline, _last_line(app)
            await pilot.pause(0.05)
        footer = _last_line(app)
        for shown in ("g germinate", "a advance", "A force-advance", "c cull", "p pause/resume", "? help", "q quit"):
            assert shown in footer, (shown, footer)
        assert len(footer.rstrip()) <= size[0]


def _last_line(app: EsperApp) -> str:
    return [strip.text for strip in app.screen._compositor.render_strips()][-1]
