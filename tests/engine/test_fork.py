"""Forking a run from a past epoch (issue 11): the nearest kept checkpoint, the source untouched, and
with nothing changed the fork repeats the original exactly."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from engine import launch
from engine.config import quick_config
from engine.fork import FORK_DIR, ForkSource, fork_points
from engine.rundir import StartError
from engine.telemetry import read_events
from engine.trainer import Trainer


def run(path: Path, epochs: int = 8, **config) -> Path:
    cfg = quick_config(epochs=epochs, checkpoint_every=config.pop("checkpoint_every", 1), device="cpu", **config)
    assert Trainer(cfg, path, serve_commands=False).run() == 0
    return path


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def journey(path: Path, after: int = 0) -> list:
    events = read_events(path).events
    epochs = [(e.epoch, e.val_loss, [(r.slot, str(r.stage), r.blueprint, r.alpha) for r in e.slots])
              for e in events if e.kind == "epoch_completed" and e.epoch > after]
    moves = [(e.epoch, e.step, e.slot, str(e.from_stage), str(e.to_stage), e.cause)
             for e in events if e.kind == "stage_changed" and e.epoch > after]
    return [epochs, moves]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return run(tmp_path_factory.mktemp("fork") / "source")


def test_a_fork_with_nothing_changed_repeats_the_original_and_leaves_it_untouched(source, tmp_path):
    before = fingerprint(source)
    fork = ForkSource.find(source, 4)
    assert (fork.epoch, fork.checkpoint.name) == (4, "epoch-00004.pt")
    assert Trainer(quick_config(device="cpu"), tmp_path / "fork", serve_commands=False, fork=fork).run() == 0
    assert fingerprint(source) == before  # only read
    original = journey(source, after=4)
    assert original[1], "the source made no lifecycle move after epoch 4: nothing to compare"
    assert journey(tmp_path / "fork", after=4) == original
    events = read_events(tmp_path / "fork").events
    starts = [e for e in events if e.kind == "run_started"]
    source_id = next(e.run_id for e in read_events(source).events if e.kind == "run_started")
    assert starts[-1].forked_from == {"run_id": source_id, "run_dir": str(source), "epoch": 4}
    assert starts[-1].run_id != source_id and starts[-1].resumed_from_epoch == 4
    # The fork's log tells the whole story: the source's first 4 epochs, then its own, each once.
    assert [e.epoch for e in events if e.kind == "epoch_completed"] == list(range(1, 9))


def test_a_fork_takes_the_nearest_kept_checkpoint_at_or_before_the_epoch(tmp_path):
    src = run(tmp_path / "every2", epochs=6, checkpoint_every=2)
    assert list(fork_points(src)) == [2, 4, 6]
    assert ForkSource.find(src, 5).epoch == 4 and ForkSource.find(src, 5).asked_epoch == 5
    with pytest.raises(StartError, match="no checkpoint at or before it; it kept checkpoints at epochs 2, 4, 6"):
        ForkSource.find(src, 1)


def test_a_run_keeps_only_the_newest_fork_points(tmp_path):
    src = run(tmp_path / "keep3", epochs=6, checkpoint_keep=3)
    assert [p.name for p in fork_points(src).values()] == ["epoch-00004.pt", "epoch-00005.pt", "epoch-00006.pt"]
    none = run(tmp_path / "keep0", epochs=2, checkpoint_keep=0)
    assert not (none / FORK_DIR).exists()
    # --overwrite replaces a run: its fork points go with it, never to be taken for the new run's.
    cfg = quick_config(epochs=2, checkpoint_every=1, device="cpu")
    assert Trainer(cfg, src, overwrite=True, serve_commands=False).run() == 0
    assert list(fork_points(src)) == [1, 2]


def test_fork_errors_are_one_line_and_exit_2(source, tmp_path, capsys):
    assert launch.main(["train", "--fork", str(tmp_path / "nowhere"), "--fork-epoch", "3",
                        "--run-dir", str(tmp_path / "f")]) == 2
    assert "cannot fork" in capsys.readouterr().err
    assert launch.main(["train", "--fork", str(source), "--run-dir", str(tmp_path / "f")]) == 2
    assert "--fork RUN_DIR and --fork-epoch N go together" in capsys.readouterr().err
    assert launch.main(["train", "--fork", str(source), "--fork-epoch", "3", "--run-dir", str(source)]) == 2
    assert "give it its own --run-dir" in capsys.readouterr().err
