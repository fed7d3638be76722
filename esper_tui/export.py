"""`esper-tui export RUN --csv DIR`: a run log as CSV tables, to sit beside a user's other runs.

Three files, one row per fact, every value as the log holds it (numbers at full precision, empty for
"not measured"):

  epochs.csv   one row per completed epoch: losses, accuracies, epoch time, samples/s
  slots.csv    one row per slot per epoch: stage, blueprint, seed, alpha, gradient ratio and its
               threshold, credit with its interval and method, parameters
  moves.csv    one row per stage change: epoch, step, slot, seed, from, to, cause, forced, reason

Pure stdlib (`csv`); no torch. Text from the log is made terminal-safe and, where a spreadsheet would
take it for a formula (a leading =, +, -, @), quoted with a leading apostrophe.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from engine.telemetry.runlog import LogRead
from engine.telemetry.safe_text import safe_text

EPOCH_COLUMNS = ("epoch", "step", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_time_s",
                 "samples_per_s")
SLOT_COLUMNS = ("epoch", "slot", "stage", "blueprint", "seed_id", "epochs_in_stage", "alpha", "grad_ratio",
                "grad_ratio_threshold", "credit", "credit_low", "credit_high", "credit_method", "params")
MOVE_COLUMNS = ("epoch", "step", "seq", "slot", "seed_id", "blueprint", "from", "to", "cause", "forced", "reason")
FILES = ("epochs.csv", "slots.csv", "moves.csv")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def value_cell(value: Any) -> str:
    """A number, flag or word as a CSV cell: floats at full precision (`repr`), None as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return str(value)
    return text_cell(str(value))


def text_cell(text: str) -> str:
    """Text from the log as a cell: terminal-safe, and never read as a formula by a spreadsheet."""
    safe = safe_text(text)
    return "'" + safe if safe.startswith(_FORMULA_STARTS) else safe


def rows(read: LogRead) -> dict[str, list[list[str]]]:
    """The three tables (file name → rows, header first) of one run log."""
    epochs: list[list[str]] = [list(EPOCH_COLUMNS)]
    slots: list[list[str]] = [list(SLOT_COLUMNS)]
    moves: list[list[str]] = [list(MOVE_COLUMNS)]
    for e in read.events:
        if e.kind == "epoch_completed":
            epochs.append([value_cell(v) for v in (e.epoch, e.step, e.train_loss, e.train_accuracy, e.val_loss,
                                                   e.val_accuracy, e.epoch_time_s, e.samples_per_s)])
            for r in e.slots:
                slots.append([value_cell(v) for v in (
                    e.epoch, r.slot, str(r.stage), r.blueprint, r.seed_id, r.epochs_in_stage, r.alpha, r.grad_ratio,
                    r.grad_ratio_threshold, r.counterfactual, r.credit_low, r.credit_high, r.credit_method, r.params)])
        elif e.kind == "stage_changed":
            moves.append([value_cell(v) for v in (e.epoch, e.step, e.seq, e.slot, e.seed_id, e.blueprint,
                                                  str(e.from_stage), str(e.to_stage), e.cause, e.forced, e.reason)])
    return {"epochs.csv": epochs, "slots.csv": slots, "moves.csv": moves}


def write_csv(read: LogRead, out_dir: str | os.PathLike[str]) -> dict[Path, int]:
    """Write the tables into `out_dir` (created if missing; these three files replaced). Returns each
    path written with its number of data rows. Raises OSError (the caller says which file and why)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, table in rows(read).items():
        path = out / name
        tmp = out / f".{name}.tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(table)
        os.replace(tmp, path)  # a reader never sees half a file
        written[path] = len(table) - 1
    return written


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """One exported table back as dicts (for tests and scripts)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


__all__ = ["FILES", "read_csv", "rows", "text_cell", "value_cell", "write_csv"]
