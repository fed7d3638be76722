"""A damaged run log, as the user meets it: the dashboard says lines were skipped and which, and
`esper-tui replay --strict` refuses the log in one line (SPEC §7)."""

from __future__ import annotations

import time

import pytest

from engine.telemetry import Emitter, EpochCompleted, RunFinished, RunLogWriter, RunStarted, StepMetrics
from esper_tui import cli
from esper_tui.app import EsperApp
from esper_tui.replay import ReplaySource
from esper_tui.state import RunState
from esper_tui.widgets import EventLog, RunHeader
from esper_tui.widgets.header import header_text

pytestmark = pytest.mark.timeout(60)


def write_run(run_dir, bad_line_after: int | None = None):
    """A short finished run; with `bad_line_after`, a garbage line follows that many events."""
    path = run_dir / "events.jsonl"
    with RunLogWriter(path) as writer:
        emitter = Emitter(writer)
        emitter.emit(RunStarted, run_id="r1", config={}, task="digits", topology="cnn", slots=("s1",),
                     isolation={}, device="cpu", planned_epochs=2)
        for n in (1, 2):
            emitter.epoch = n
            emitter.emit(StepMetrics, loss=0.5, lr=0.1)
            emitter.emit(EpochCompleted, val_accuracy=50.0 + n)
        emitter.emit(RunFinished, status="completed")
    if bad_line_after is not None:
        lines = path.read_bytes().splitlines(keepends=True)
        lines.insert(bad_line_after, b'{"kind": "step_metrics", "seq": "four"}\n')
        path.write_bytes(b"".join(lines))
    return path


def test_the_header_says_how_many_lines_were_skipped():
    state = RunState()
    assert "skipped" not in header_text(state, "LIVE")
    state.skipped_lines = 1
    assert "1 line skipped" in header_text(state, "LIVE")
    state.skipped_lines = 3
    assert "3 lines skipped" in header_text(state, "LIVE", width=60)  # kept when the line is narrow


@pytest.mark.asyncio
async def test_replaying_a_damaged_log_shows_the_skipped_line(run_dir):
    write_run(run_dir, bad_line_after=3)
    app = EsperApp(ReplaySource(run_dir, speed=0), refresh=30.0)
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 10
        while "FINISHED (replay)" not in app.dashboard.query_one(RunHeader).text:
            assert time.monotonic() < deadline, app.dashboard.query_one(RunHeader).text
            await pilot.pause(0.05)
        assert "1 line skipped" in app.dashboard.query_one(RunHeader).text
        lines = app.dashboard.query_one(EventLog).lines
        (note,) = [line for line in lines if "skipped" in line]
        assert note.startswith("line 4 skipped: not a valid event") and "seq" in note


def test_replay_strict_refuses_a_damaged_log_in_one_line(run_dir, capsys):
    write_run(run_dir, bad_line_after=3)
    assert cli.main(["replay", "--strict", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "line 4" in err and "--strict" in err


def test_replay_strict_plays_a_clean_log(run_dir, monkeypatch):
    write_run(run_dir)
    ran = []
    monkeypatch.setattr(cli, "_run_app", lambda source, *a: ran.append(source) or 0)
    assert cli.main(["replay", "--strict", str(run_dir / "events.jsonl")]) == 0
    (source,) = ran
    assert source.strict and source.problems == []
