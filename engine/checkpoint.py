"""Checkpoints: the whole run state as plain tensors and dicts, saved atomically, loaded weights-only.

One typed `RunSnapshot` serves the governor's in-memory snapshot and the on-disk checkpoint, so a
rollback and a `--resume` restore exactly the same things: host and seed weights, every slot's
lifecycle (stage, alpha, metrics), every optimizer, the controller and the random streams. On disk
it is a plain dict (`RunSnapshot.to_state`), which the weights-only loader accepts.
"""

from __future__ import annotations

import copy
import os
import pickle
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from engine.rundir import CHECKPOINT_NAME, StartError

FORMAT = 1


@dataclass(slots=True)
class RunSnapshot:
    """The whole run state at one moment (see the module docstring). Fields with a default may be
    missing from older checkpoints; a file missing any other cannot be resumed from."""

    epoch: int  # epochs completed (one stopped mid-epoch is not: a resume runs it again)
    step: int
    config: dict  # the RunConfig as JSON
    model: dict  # the host's state dict, seeds included
    slots: dict  # slot id → SeedSlot.export_state()
    bank: dict  # optimizers and learning rates (SeedBank.state_dict)
    controller: dict
    autopilot: bool
    history: dict  # {"val_losses": [...], "val_accuracies": [...]}
    rng: dict  # {"torch": ..., "data": ...}
    credit: dict | None = None  # the credit book (shadow twins); absent before credit had state
    seq: int | None = None  # the seq of this checkpoint's own checkpoint_saved (see Trainer._save_checkpoint)

    def to_state(self) -> dict[str, Any]:
        """The plain dict written to disk."""
        return {"format": FORMAT, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_state(cls, state: dict[str, Any], path: Path) -> RunSnapshot:
        """A snapshot from a loaded dict, or CheckpointError naming the first field that is wrong."""
        values = {}
        for f in fields(cls):
            present = f.name in state and state[f.name] is not None
            if not present and f.default is not MISSING:
                continue
            kind = _KINDS[str(f.type).split(" ")[0]]
            if not isinstance(state.get(f.name), kind):
                what = "missing" if f.name not in state else f"a {type(state[f.name]).__name__}, not a {kind.__name__}"
                raise CheckpointError(f"{path} is not a complete esper checkpoint ({f.name!r} is {what}): "
                                      "start a new run instead of --resume")
            values[f.name] = state[f.name]
        return cls(**values)

    def detached(self) -> RunSnapshot:
        """A deep copy whose tensors no longer alias live parameters (an in-memory snapshot, or a
        copy to restore from: optimizers alias the tensors they load)."""
        return copy.deepcopy(self)


_KINDS: dict[str, type] = {"int": int, "bool": bool, "dict": dict}  # RunSnapshot's field types, checked


class CheckpointWriteError(OSError):
    """Saving a checkpoint failed (disk full, I/O error): the previous checkpoint is kept."""

    def __str__(self) -> str:
        return str(self.strerror)  # the whole sentence, without OSError's "[Errno 28]" prefix


class CheckpointError(StartError, ValueError):
    """A checkpoint that cannot be resumed from: says which file, what is wrong and what to do."""


def save(state: dict[str, Any], path: Path) -> Path:
    """Write `state` to `path` atomically (temp file + rename), owner-only permissions."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    # A .tmp left by a crash mid-save may have other permissions (or be a link): start afresh, and
    # create exclusively so the mode below is the one the file really gets.
    tmp.unlink(missing_ok=True)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with open(fd, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # the previous checkpoint, if any, is untouched
            raise
    except OSError as exc:
        raise CheckpointWriteError(exc.errno, f"cannot write checkpoint {path}: {exc.strerror or exc}") from None
    except RuntimeError as exc:  # torch's zip writer reports a failed write as RuntimeError
        if "write" not in str(exc).lower():
            raise
        raise CheckpointWriteError(0, f"cannot write checkpoint {path}: {exc}") from None
    return path


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`: tensors and plain containers, never code."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists() and not path.is_symlink():
        raise CheckpointError(
            f"no checkpoint at {path}: a run writes one every `checkpoint_every` epochs and when it "
            "stops; start a new run instead of --resume"
        )
    advice = "it may be truncated, damaged or from another program: start a new run instead of --resume"
    try:
        # O_NOFOLLOW: a link planted at checkpoint.pt is refused, not read through.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise CheckpointError(f"cannot open checkpoint {path}: {exc.strerror or exc}"
                              + (" (it is a symbolic link)" if path.is_symlink() else "")) from None
    try:
        with open(fd, "rb") as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, or holding objects that weights_only refuses
        if isinstance(exc, pickle.UnpicklingError):
            why = "it holds objects other than tensors and plain containers, which weights-only loading refuses"
        else:  # the first line only, printable only: torch's messages carry terminal codes
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            why = f"{type(exc).__name__}: {''.join(c for c in first if c.isprintable())}"
        raise CheckpointError(f"{path} is not a readable esper checkpoint ({why}); {advice}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an esper checkpoint of format {FORMAT}; {advice}")
    return state


def load_run(path: Path) -> RunSnapshot:
    """`load`, then check the file holds a whole run state (what `--resume` needs), else CheckpointError."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    return RunSnapshot.from_state(load(path), path)
