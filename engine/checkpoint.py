"""Checkpoints: the whole run state as plain tensors and dicts, saved atomically, loaded weights-only.

The same captured dict serves the governor's in-memory snapshot and the on-disk checkpoint, so a
rollback and a `--resume` restore exactly the same things: host and seed weights, every slot's
lifecycle (stage, alpha, metrics), every optimizer, the controller and the random streams.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch

FORMAT = 1
CHECKPOINT_NAME = "checkpoint.pt"


def save(state: dict[str, Any], path: Path) -> Path:
    """Write `state` to `path` atomically (temp file + rename), owner-only permissions."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    # A .tmp left by a crash mid-save may have other permissions (or be a link): start afresh, and
    # create exclusively so the mode below is the one the file really gets.
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with open(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`: tensors and plain containers, never code."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(
            f"no checkpoint at {path}: a run writes one every `checkpoint_every` epochs and when it "
            "stops; start a new run instead of --resume"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, or holding objects that weights_only refuses
        raise ValueError(
            f"{path} is not a readable esper checkpoint ({type(exc).__name__}: {exc}); "
            "it may be truncated or from another program: start a new run instead of --resume"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not an esper checkpoint of format {FORMAT}")
    return state


def detached_copy(state: dict[str, Any]) -> dict[str, Any]:
    """A deep copy whose tensors no longer alias live parameters (for in-memory snapshots)."""
    return copy.deepcopy(state)
