"""Blueprint registry: maps (topology, name) to seed-module factories; knows nothing of slots, lifecycle or hosts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

__all__ = [
    "TOPOLOGIES",
    "Blueprint",
    "UnknownBlueprintError",
    "DuplicateBlueprintError",
    "register",
    "get",
    "create",
    "names",
    "is_registered",
    "param_count",
]

TOPOLOGIES: tuple[str, ...] = ("cnn", "transformer")


@dataclass(frozen=True, slots=True)
class Blueprint:
    """A registered seed recipe.

    ``factory(dim)`` builds a shape-preserving residual module; ``param_count(dim)``
    is the exact analytic number of parameters that module has (pure arithmetic).
    """

    topology: str
    name: str
    factory: Callable[[int], nn.Module]
    param_count: Callable[[int], int]
    identity_at_init: bool
    description: str


class UnknownBlueprintError(ValueError):
    """Raised when a (topology, name) pair is not registered."""


class DuplicateBlueprintError(ValueError):
    """Raised when registering a name that already exists for a topology."""


# topology -> {name -> Blueprint}; dicts keep registration order.
_REGISTRY: dict[str, dict[str, Blueprint]] = {t: {} for t in TOPOLOGIES}


def _check_topology(topology: str) -> dict[str, Blueprint]:
    try:
        return _REGISTRY[topology]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown topology {topology!r}; expected one of {list(TOPOLOGIES)}"
        ) from None


def register(
    topology: str,
    name: str,
    *,
    param_count: Callable[[int], int],
    identity_at_init: bool,
    description: str,
) -> Callable[[Callable[[int], nn.Module]], Callable[[int], nn.Module]]:
    """Decorator registering ``factory(dim) -> nn.Module`` under (topology, name).

    Validation happens when the decorator is created, so a rejected registration
    never leaves anything in the registry. The factory is returned unchanged.
    """
    table = _check_topology(topology)
    if not isinstance(name, str) or not name:
        raise ValueError(f"blueprint name must be a non-empty string, got {name!r}")
    if name in table:
        raise DuplicateBlueprintError(
            f"blueprint {name!r} is already registered for topology {topology!r}"
        )
    if not callable(param_count):
        raise TypeError("param_count must be callable: dim -> int")

    def decorator(factory: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
        if name in table:  # registered between decorator creation and application
            raise DuplicateBlueprintError(
                f"blueprint {name!r} is already registered for topology {topology!r}"
            )
        table[name] = Blueprint(
            topology=topology,
            name=name,
            factory=factory,
            param_count=param_count,
            identity_at_init=bool(identity_at_init),
            description=description,
        )
        return factory

    return decorator


def get(topology: str, name: str) -> Blueprint:
    """Return the Blueprint for (topology, name); UnknownBlueprintError if absent."""
    table = _check_topology(topology)
    try:
        return table[name]
    except (KeyError, TypeError):
        raise UnknownBlueprintError(
            f"unknown blueprint {name!r} for topology {topology!r}; "
            f"registered: {list(table)}"
        ) from None


def create(topology: str, name: str, dim: int) -> nn.Module:
    """Build a fresh seed module for ``dim`` channels (CNN) or features (Transformer)."""
    bp = get(topology, name)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    return bp.factory(dim)


def names(topology: str) -> list[str]:
    """Registered names for ``topology`` in registration order (a fresh list)."""
    return list(_check_topology(topology))


def is_registered(topology: str, name: str) -> bool:
    """True if (topology, name) is registered; False for unknown topologies too."""
    table = _REGISTRY.get(topology) if isinstance(topology, str) else None
    return table is not None and name in table


def param_count(topology: str, name: str, dim: int) -> int:
    """Exact parameter count of ``create(topology, name, dim)``, computed analytically."""
    return int(get(topology, name).param_count(dim))
