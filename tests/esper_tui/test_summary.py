"""`esper-tui replay --summary RUN`: the report a person reads instead of replaying (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.telemetry import read_events
from esper_tui import cli
from esper_tui.summary import cell, epoch_ranges, summarize

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
STEERED = FIXTURES / "steered-run.jsonl"
CRASHED = FIXTURES / "crashed-run.jsonl"


def report(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["replay", "--summary", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_summary_tells_how_the_run_ended_how_good_it_got_and_each_seeds_journey(capsys):
    code, out, err = report(capsys, str(STEERED))
    assert code == 0 and err == ""
    assert out.startswith("# run 100f4031bc2e: digits\n")
    assert "- ended: FINISHED at epoch 26" in out
    assert "- final: val accuracy 90.8%, val loss 0.3444 (epoch 26)" in out
    assert "- best: val accuracy 93.3% (epoch 24)" in out
    assert "| optim.lr | 0.01 |" in out
    # block1's seed, moved by the autopilot and the gates, each move with its epoch and cause.
    journey = out[out.index("### block1#1: conv_light in block1, FOSSILIZED"):]
    for row in ("| 11 | DORMANT → GERMINATED | autopilot | germinated conv_light |",
                "| 15 | TRAINING → BLENDING | gate | G2 passed |",
                "| 22 | PROBATIONARY → FOSSILIZED | gate | G5 passed |"):
        assert row in journey, row
    assert "- G4 failed 2× (epochs 19–20); last: needs val loss (vs before blending, with tolerance) at most " \
           "0.3349 (now 0.3406)" in journey
    assert "- credit (epoch 22): cf +8.1" in journey
    # The operator's forced move says so, and every command has the engine's answer.
    assert "| 1 | TRAINING → BLENDING | operator, forced |" in out
    assert "| 1 | germinate attention in block2 | applied |" in out
    assert "| 1 | cull block7 (reason: operator cull) | rejected: unknown slot 'block7';" in out
    assert "- 195 events read" in out and "- 0 lines skipped" in out


def test_a_crashed_run_says_where_and_why(capsys):
    code, out, _ = report(capsys, str(CRASHED))
    assert code == 0
    assert "- ended: CRASHED at epoch 5: RuntimeError: fault drill: crash requested at epoch 5" in out


def test_a_damaged_log_is_summarized_with_what_was_skipped_and_strict_refuses_it(tmp_path, capsys):
    lines = STEERED.read_text().splitlines(keepends=True)
    damaged = tmp_path / "events.jsonl"
    damaged.write_text("".join(lines[:40]) + "{not json\n" + "".join(lines[40:]) + '{"kind": "epoch_comp')
    code, out, _ = report(capsys, str(tmp_path))
    assert code == 0
    assert "- ended: FINISHED at epoch 26" in out  # everything valid is still there
    assert "- 2 lines skipped" in out
    assert "  - line 41 skipped" in out and "  - line 197 skipped" in out
    code, out, err = report(capsys, "--strict", str(tmp_path))
    assert code == 2 and out == ""
    assert err.startswith("esper-tui: refusing to summarize (--strict): ") and "line 41" in err


@pytest.mark.parametrize(("content", "says"), [
    (None, "no run log at"),
    ("", "is not a run log: no event at all (an empty log)"),
    ("\x00\x01binary garbage\nmore garbage\n", "is not a run log: 2 lines and not one event"),
])
def test_a_missing_empty_or_foreign_file_is_one_line_and_exit_2(tmp_path, capsys, content, says):
    path = tmp_path / "events.jsonl"
    if content is not None:
        path.write_text(content)
    code, out, err = report(capsys, str(path))
    assert code == 2 and out == ""
    assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_strings_from_the_log_are_text_and_cannot_break_a_table(tmp_path, capsys):
    events = [json.loads(line) for line in STEERED.read_text().splitlines()]
    for e in events:
        if e["kind"] == "stage_changed" and e.get("reason") == "G2 passed":
            e["reason"] = "G2 \x1b]52;c;aGk=\x07passed | twice"
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    code, out, _ = report(capsys, str(path))
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out
    assert "| gate | G2 \\x1b]52;c;aGk=\\x07passed \\| twice |" in out


def test_epoch_spans_and_cells():
    assert epoch_ranges([4, 5, 6, 9, 11, 12]) == "4–6, 9, 11–12"
    assert epoch_ranges([3]) == "3" and epoch_ranges([]) == ""
    assert cell("a|b\nc") == "a\\|b\\nc"


def test_summarize_works_on_what_read_events_returns():
    read = read_events(STEERED)
    assert summarize(read).count("\n### ") == 2  # one section per seed
