"""`esper-tui export RUN --csv DIR`: the log's numbers, unchanged, as tables (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path

from engine.telemetry import read_events
from esper_tui import cli
from esper_tui.export import read_csv, text_cell, value_cell

STEERED = Path(__file__).resolve().parents[1] / "fixtures" / "steered-run.jsonl"


def number(cell: str) -> float | None:
    return None if cell == "" else float(cell)


def test_export_round_trips_every_number_and_move(tmp_path, capsys):
    out = tmp_path / "csv"
    assert cli.main(["export", str(STEERED), "--csv", str(out)]) == 0
    said = capsys.readouterr().out.splitlines()
    assert said == [f"wrote {out / 'epochs.csv'} (26 rows)", f"wrote {out / 'slots.csv'} (52 rows)",
                    f"wrote {out / 'moves.csv'} (10 rows)"]
    events = read_events(STEERED).events
    epochs = [e for e in events if e.kind == "epoch_completed"]
    rows = read_csv(out / "epochs.csv")
    assert [int(r["epoch"]) for r in rows] == [e.epoch for e in epochs]
    for row, e in zip(rows, epochs):  # full precision: the very floats of the log
        assert number(row["val_loss"]) == e.val_loss and number(row["val_accuracy"]) == e.val_accuracy
        assert number(row["train_loss"]) == e.train_loss
    slots = read_csv(out / "slots.csv")
    reports = [(e.epoch, r) for e in epochs for r in e.slots]
    assert len(slots) == len(reports)
    for row, (epoch, r) in zip(slots, reports):
        assert (int(row["epoch"]), row["slot"], row["stage"]) == (epoch, r.slot, str(r.stage))
        assert number(row["alpha"]) == r.alpha and number(row["grad_ratio"]) == r.grad_ratio
        assert number(row["credit"]) == r.counterfactual
    moves = read_csv(out / "moves.csv")
    changes = [e for e in events if e.kind == "stage_changed"]
    assert [(int(m["seq"]), m["slot"], m["from"], m["to"], m["cause"], m["forced"]) for m in moves] == \
        [(e.seq, e.slot, str(e.from_stage), str(e.to_stage), e.cause, "true" if e.forced else "false") for e in changes]


def test_text_from_the_log_is_never_a_formula_or_a_terminal_code():
    assert text_cell("=HYPERLINK(\"http://x\")") == "'=HYPERLINK(\"http://x\")"
    assert text_cell("@SUM(A1)") == "'@SUM(A1)" and text_cell("G2 passed") == "G2 passed"
    assert text_cell("\x1b[2J") == "\\x1b[2J"
    assert value_cell(-0.5) == "-0.5"  # numbers are numbers, sign and all
    assert value_cell(None) == "" and value_cell(True) == "true" and value_cell(3) == "3"


def test_a_hostile_reason_is_exported_as_text(tmp_path, capsys):
    events = [json.loads(line) for line in STEERED.read_text().splitlines()]
    for e in events:
        if e["kind"] == "stage_changed":
            e["reason"] = "=cmd|' /C calc'!A0"
    log = tmp_path / "events.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in events))
    assert cli.main(["export", str(log), "--csv", str(tmp_path / "out")]) == 0
    assert {m["reason"] for m in read_csv(tmp_path / "out" / "moves.csv")} == {"'=cmd|' /C calc'!A0"}


def test_a_damaged_log_exports_what_is_valid_and_says_what_was_skipped(tmp_path, capsys):
    lines = STEERED.read_text().splitlines(keepends=True)
    (tmp_path / "events.jsonl").write_text("".join(lines[:30]) + "garbage\n" + "".join(lines[30:]))
    assert cli.main(["export", str(tmp_path), "--csv", str(tmp_path / "out")]) == 0
    _, err = capsys.readouterr()
    assert "1 bad line of the log skipped" in err
    assert len(read_csv(tmp_path / "out" / "epochs.csv")) == 26
    assert cli.main(["export", str(tmp_path), "--csv", str(tmp_path / "strict"), "--strict"]) == 2
    assert "refusing to export (--strict)" in capsys.readouterr().err
    assert not (tmp_path / "strict").exists()


def test_a_directory_that_cannot_be_written_is_one_line_and_exit_1(tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("a file where the export directory should go")
    assert cli.main(["export", str(STEERED), "--csv", str(blocker / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"esper-tui: cannot write the export to {blocker / 'out'}: ") and len(err.splitlines()) == 1
    assert blocker.read_text().startswith("a file")  # untouched


def test_a_missing_log_is_exit_2(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "nothing"), "--csv", str(tmp_path / "out")]) == 2
    assert "cannot export" in capsys.readouterr().err
