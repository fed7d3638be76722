"""Forking a run: a new run that starts from another run's state at the end of a past epoch.

A run keeps a copy of each checkpoint it publishes at an epoch end as
`RUN_DIR/checkpoints/epoch-NNNNN.pt` (a hard link to the file just written, so no extra write; the
newest `checkpoint_keep` are kept). `ForkSource.find(run, N)` picks the newest one at or before epoch
N; `copy_into(new_dir, seq)` gives the new run that checkpoint and the source's log up to it, so the
fork's own log tells the whole story and a replay, a summary or a compare of the fork reads like the
original up to the fork point. The fork then goes on exactly as a resume would: same weights,
optimizer state and RNG state, so with nothing changed it repeats the original's lifecycle. The
source run is only read. Knows no UI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.rundir import CHECKPOINT_NAME, FORK_DIR, StartError
from engine.telemetry.runlog import LOG_NAME

_NAME = re.compile(r"epoch-(\d{5,})\.pt")


def fork_name(epoch: int) -> str:
    return f"epoch-{epoch:05d}.pt"


def fork_points(run_dir: str | os.PathLike[str]) -> dict[int, Path]:
    """The epoch checkpoints a run kept, by epoch (empty if none)."""
    folder = Path(run_dir) / FORK_DIR
    if not folder.is_dir():
        return {}
    found = {}
    for path in folder.iterdir():
        match = _NAME.fullmatch(path.name)
        if match and path.is_file() and not path.is_symlink():
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def keep_for_forks(checkpoint: Path, epoch: int, keep: int) -> Path | None:
    """Keep the checkpoint just published at `checkpoint` as the fork point of `epoch` (a hard link,
    or a copy where the filesystem has none), then drop all but the newest `keep`. None when
    `keep` is 0. Raises OSError (the caller warns; the run goes on)."""
    if keep <= 0:
        return None
    folder = checkpoint.parent / FORK_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    target = folder / fork_name(epoch)
    target.unlink(missing_ok=True)
    try:
        os.link(checkpoint, target)
    except OSError:
        shutil.copyfile(checkpoint, target)
        os.chmod(target, 0o600)
    for old in list(fork_points(checkpoint.parent).values())[:-keep]:
        old.unlink(missing_ok=True)
    return target


@dataclass(frozen=True, slots=True)
class ForkSource:
    """Where a fork starts: a run directory, the epoch of the checkpoint used, its file."""

    run_dir: Path
    epoch: int
    checkpoint: Path
    asked_epoch: int

    @classmethod
    def find(cls, run_dir: str | os.PathLike[str], epoch: int) -> ForkSource:
        """The newest kept checkpoint of `run_dir` at or before `epoch`, or StartError saying what exists."""
        source = Path(run_dir)
        if not (source / LOG_NAME).is_file():
            raise StartError(f"cannot fork {source}: it holds no {LOG_NAME} (give the directory of a run)")
        points = fork_points(source)
        usable = [e for e in points if e <= epoch]
        if not usable:
            kept = f"it kept checkpoints at epochs {', '.join(map(str, points))}" if points else \
                f"it kept no epoch checkpoints (in {source / FORK_DIR}; runs keep them from this version on)"
            raise StartError(f"cannot fork {source} at epoch {epoch}: no checkpoint at or before it; {kept}")
        chosen = usable[-1]
        return cls(source, chosen, points[chosen], epoch)

    def describe(self, run_id: str | None) -> dict[str, Any]:
        """`run_started.forked_from`: the source's run id, its directory, the epoch it forked at."""
        return {"run_id": run_id, "run_dir": str(self.run_dir), "epoch": self.epoch}

    def copy_into(self, new_dir: Path, seq: int) -> str | None:
        """Give `new_dir` the fork point's checkpoint and the source's log up to event `seq` (the
        checkpoint's). Returns the source's run id (from its first run_started), or None. Raises
        StartError when the new directory cannot take them (the source is never written)."""
        try:
            return self._copy(new_dir, seq)
        except OSError as exc:
            raise StartError(f"cannot fork into {new_dir}: {exc.strerror or exc}") from None

    def _copy(self, new_dir: Path, seq: int) -> str | None:
        shutil.copyfile(self.checkpoint, new_dir / CHECKPOINT_NAME)
        os.chmod(new_dir / CHECKPOINT_NAME, 0o600)
        run_id = None
        fd = os.open(new_dir / LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with open(self.run_dir / LOG_NAME, "rb") as src, open(fd, "wb") as out:
            for line in src:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a damaged line of the source stays behind
                if not isinstance(event, dict) or not isinstance(event.get("seq"), int):
                    continue
                if event["seq"] > seq:
                    break
                if run_id is None and event.get("kind") == "run_started":
                    run_id = event.get("run_id")
                out.write(line if line.endswith(b"\n") else line + b"\n")
            out.flush()
            os.fsync(out.fileno())
        return run_id if isinstance(run_id, str) else None


__all__ = ["FORK_DIR", "ForkSource", "fork_name", "fork_points", "keep_for_forks"]
