"""The replay's timeline bar (issue 11): lifecycle marks over the whole run, and the play position."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.telemetry import read_events
from esper_tui.app import EsperApp
from esper_tui.replay import ReplaySource
from esper_tui.timeline import POSITION, Mark, column, marks_of, timeline_text
from esper_tui.widgets import RunHeader, Timeline
from tests.esper_tui.static_source import StaticSource

STEERED = Path(__file__).resolve().parents[1] / "fixtures" / "steered-run.jsonl"


def test_marks_come_from_the_lifecycle_and_the_forced_move_says_so():
    marks = marks_of(read_events(STEERED).events)
    # block2: germinated by the operator at 1, forced on at 1; block1: germinated 11, fossilized 22.
    assert marks == (Mark(1, "germinated"), Mark(1, "forced"), Mark(11, "germinated"), Mark(22, "fossilized"))


def test_the_line_spans_the_run_and_the_telling_mark_wins_a_shared_column():
    marks = (Mark(1, "germinated"), Mark(1, "forced"), Mark(11, "germinated"), Mark(22, "fossilized"))
    line = timeline_text(marks, last_epoch=26, position=0, width=26)
    assert len(line) == 26
    assert line[0] == "!" and line[10] == "+" and line[21] == "◆" and line.count("·") == 23
    moving = timeline_text(marks, last_epoch=26, position=15, width=26)
    assert moving[14] == POSITION and moving.count(POSITION) == 1
    assert column(1, 26, 80) == 0 and column(26, 26, 80) == 79 and column(99, 26, 80) == 79
    assert timeline_text((), last_epoch=1, position=1, width=5) == POSITION + "····"


@pytest.mark.asyncio
async def test_a_replay_shows_the_timeline_and_a_live_run_does_not(steered_events):
    source = ReplaySource(STEERED, speed=0)
    app = EsperApp(source, refresh=30.0)
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 15
        while "FINISHED (replay)" not in app.dashboard.query_one(RunHeader).text:
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        await pilot.pause(0.1)
        bar = app.dashboard.query_one(Timeline)
        text = str(bar.render())
        assert bar.display and len(text) == bar.content_region.width
        assert text.endswith(POSITION) and "!" in text and "◆" in text and "+" in text
    live = EsperApp(StaticSource(steered_events), refresh=30.0)
    async with live.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.3)
        assert not live.dashboard.query_one(Timeline).display
