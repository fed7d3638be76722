"""Seed blueprints: registry of shape-preserving residual seed modules per topology; knows nothing of slots, lifecycle or hosts."""

from .registry import (
    TOPOLOGIES,
    Blueprint,
    DuplicateBlueprintError,
    UnknownBlueprintError,
    create,
    get,
    is_registered,
    names,
    param_count,
    register,
)

# Imported for their registration side effects (order: cnn, then transformer).
from . import cnn, transformer  # noqa: E402,F401

__all__ = [
    "TOPOLOGIES",
    "Blueprint",
    "DuplicateBlueprintError",
    "UnknownBlueprintError",
    "create",
    "get",
    "is_registered",
    "names",
    "param_count",
    "register",
    "cnn",
    "transformer",
]
