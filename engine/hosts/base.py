"""What every host offers (the `Host` protocol) and the parameter bookkeeping they share.

"Host parameters" are the network's own plus those of fossilized seeds (which became host); the
seeds still on trial are not host. Functions, not a base class: hosts stay plain `nn.Module`s.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import nn

from engine.lifecycle import Stage
from engine.slot import SeedSlot


@runtime_checkable
class Host(Protocol):
    """A network with named slots. `slots` is ordered, slot id → SeedSlot."""

    topology: str
    slots: nn.ModuleDict

    def host_parameters(self) -> list[nn.Parameter]: ...

    def on_optimizer_step(self) -> None: ...


def seed_parameters(host: nn.Module, include_fossilized: bool = False) -> list[nn.Parameter]:
    """Parameters of the seeds in `host`'s slots (live ones; fossilized too if asked)."""
    out: list[nn.Parameter] = []
    for slot in host.slots.values():
        if slot.seed is not None and (include_fossilized or slot.stage is not Stage.FOSSILIZED):
            out.extend(slot.seed.parameters())
    return out


def host_parameters(host: nn.Module) -> list[nn.Parameter]:
    """Every parameter of `host` except those of seeds still on trial (fossilized seeds count)."""
    trial = {id(p) for p in seed_parameters(host)}
    return [p for p in host.parameters() if id(p) not in trial]


def base_param_count(host: nn.Module) -> int:
    """Parameters of the network without any seed (live or fossilized)."""
    return sum(p.numel() for p in base_parameters(host))


class SeedBudget:
    """The G0 parameter budget shared by a host's slots: all seeds together ≤ fraction × base host.

    A plain object the slots hold (not a closure over the host), so a deep copy of the host copies
    it consistently with its slots.
    """

    def __init__(self, slots: list[SeedSlot], base_params: int, fraction: float) -> None:
        self.slots = slots
        self.base_params = base_params
        self.fraction = fraction

    def for_slot(self, slot: SeedSlot) -> int:
        """Parameters a new seed in `slot` may have, given the seeds in the other slots."""
        others = sum(s.seed_param_count() for s in self.slots if s is not slot)
        return max(0, int(self.fraction * self.base_params) - others)


def attach_budget(host: nn.Module, fraction: float) -> None:
    """Give every slot of a freshly built host (no seeds yet) its shared parameter budget."""
    slots = list(host.slots.values())
    budget = SeedBudget(slots, base_param_count(host), fraction)
    for slot in slots:
        slot.budget = budget


def step_slots(host: nn.Module) -> None:
    """Tell every slot an optimizer step happened (advances blending ramps; no device sync)."""
    for slot in host.slots.values():
        slot.on_optimizer_step()


def base_parameters(host: nn.Module) -> list[nn.Parameter]:
    """The network's own parameters: no seed's, fossilized or not (the host optimizer's first group)."""
    seeds = {id(p) for p in seed_parameters(host, include_fossilized=True)}
    return [p for p in host.parameters() if id(p) not in seeds]
