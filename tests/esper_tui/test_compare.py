"""`esper-tui compare RUN_A RUN_B`: two runs side by side (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Static

from engine.telemetry import read_events
from esper_tui import cli
from esper_tui.compare import Comparison, as_text
from esper_tui.screens.compare import CompareCurves, CompareScreen, moves_lines
from esper_tui.screens.standalone import StandaloneApp

STEERED = Path(__file__).resolve().parents[1] / "fixtures" / "steered-run.jsonl"


@pytest.fixture
def fork_pair(tmp_path) -> tuple[Path, Path]:
    """The steered run, and a "fork" of it at epoch 10 whose later epochs differ: val accuracy from
    epoch 12 on, and block1's fossilization at epoch 22 replaced by a cull."""
    events = [json.loads(line) for line in STEERED.read_text().splitlines()]
    source_id = next(e["run_id"] for e in events if e["kind"] == "run_started")
    forked = []
    for e in events:
        e = dict(e)
        if e["kind"] == "epoch_completed" and e["epoch"] >= 12:
            e["val_accuracy"] = e["val_accuracy"] - 1.0
        if e["kind"] == "stage_changed" and e.get("to") == "FOSSILIZED":
            e["to"], e["cause"] = "CULLED", "operator"
        forked.append(e)
    first = next(i for i, e in enumerate(forked) if e["kind"] == "epoch_completed" and e["epoch"] == 10)
    start = dict(forked[0], run_id="f0rk", resumed=True, resumed_from_epoch=10,
                 forked_from={"run_id": source_id, "run_dir": "runs/steered", "epoch": 10})
    forked.insert(first + 1, start)
    for seq, e in enumerate(forked, 1):
        e["seq"] = seq
    a, b = tmp_path / "steered", tmp_path / "fork"
    for path, rows in ((a, events), (b, forked)):
        path.mkdir()
        (path / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return a, b


def test_a_fork_is_recognised_and_the_epoch_they_part_found(fork_pair):
    a, b = fork_pair
    c = Comparison.of(read_events(a), read_events(b), ("steered", "fork"))
    assert c.relation() == "fork forked from steered at epoch 10"
    assert c.parted_at() == 12
    text = as_text(c)
    assert "- fork forked from steered at epoch 10\n- the journeys part at epoch 12\n" in text
    assert "| 22 | e22 block1 → FOSSILIZED conv_light (gate) | e22 block1 → CULLED conv_light (operator) |" in text
    same = Comparison.of(read_events(a), read_events(a), ("x", "y"))
    assert same.parted_at() is None and same.relation() is None


def test_compare_text_from_the_command_line(fork_pair, capsys):
    a, b = fork_pair
    assert cli.main(["compare", str(a), str(b), "--text"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# steered vs fork\n") and "part at epoch 12" in out
    assert cli.main(["compare", str(a), str(a.parent / "missing")]) == 2
    assert "cannot compare" in capsys.readouterr().err


@pytest.mark.asyncio
async def test_the_compare_screen_overlays_both_runs_and_marks_where_they_differ(fork_pair):
    a, b = fork_pair
    c = Comparison.of(read_events(a), read_events(b), ("steered", "fork"))
    app = StandaloneApp(CompareScreen(c))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.2)
        header = str(app.screen.query_one("#compare-header", Static).render())
        assert "fork forked from steered at epoch 10" in header and "part at epoch 12" in header
        assert [p.field for p in app.screen.query(CompareCurves)] == ["val_accuracy", "val_loss"]
        lines = moves_lines(c)
        assert any(line.startswith("≠ e22") for line in lines) and any(line.startswith("  e11") for line in lines)
        await pilot.press("q")
        await pilot.pause(0.1)
    assert not app.is_running
