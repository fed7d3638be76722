"""SeedBank: the optimizer (a param group for the host, one per live seed) and every move that
changes the model's structure — germinate, advance, fossilize, cull — each logged as events.

Whoever asks for a move (autopilot, operator, governor, timeout) goes through here, so the optimizer
bookkeeping and the events are the same on every route. Knows nothing of the epoch loop or the UI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from engine.config import OptimConfig
from engine.gates import GateResult
from engine.hosts.base import base_parameters, host_parameters
from engine.lifecycle import Stage, TransitionCheck
from engine.slot import SeedSlot, TransitionRecord
from engine.telemetry import events as ev

Emit = Callable[..., Any]
OnMove = Callable[[SeedSlot, TransitionRecord], None]


def make_optimizer(params: Iterable[nn.Parameter], config: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """One optimizer of the configured kind, fused (one kernel per step, no Python loop over tensors).

    Fused matters here more than in a plain loop: with `foreach` each param group cost ~75 µs of
    fixed dispatch per step on a tiny CPU model (bench/engine_overhead.py). The plain baseline in
    that benchmark uses this same function.
    """
    params = list(params)
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay, fused=True)
    return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay, fused=True)


def fold_in(opt: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
    """Add `params`, with no optimizer state yet, to the first group of a running optimizer.

    Fused SGD needs a momentum buffer for every parameter once it has stepped; a zero buffer gives
    exactly the first-step update (buf = grad). AdamW initialises new parameters' state itself.
    """
    group = opt.param_groups[0]
    if isinstance(opt, torch.optim.SGD) and group["momentum"] and any(opt.state[p] for p in group["params"]):
        for p in params:
            opt.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    group["params"].extend(params)


def split_state(state: dict[str, Any]) -> list[dict[str, Any]]:
    """An optimizer's state dict as one state dict per param group (indices from 0 in each), the
    shape a checkpoint keeps: the host's and each seed's, so a seed's can be dropped or restored alone."""
    out = []
    for group in state["param_groups"]:
        ids = group["params"]
        out.append({"state": {i: state["state"][old] for i, old in enumerate(ids) if old in state["state"]},
                    "param_groups": [{**group, "params": list(range(len(ids)))}]})
    return out


def join_states(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The inverse of `split_state`: one optimizer's state dict from per-group ones, in order."""
    state: dict[int, Any] = {}
    groups = []
    offset = 0
    for part in parts:
        for group in part["param_groups"]:
            n = len(group["params"])
            for i in range(n):
                if i in part["state"]:
                    state[offset + i] = part["state"][i]
            groups.append({**group, "params": list(range(offset, offset + n))})
            offset += n
    return {"state": state, "param_groups": groups}


class SeedBank:
    """Owns the optimizer of a host and applies structural moves to its slots.

    One optimizer, one param group per live seed (its own learning rate, its own state) after the
    host's group: one fused step a training step however many seeds are on trial (a second
    optimizer cost 2-3 % of a step on the digits host, bench/engine_overhead.py).
    """

    def __init__(self, host: nn.Module, config: OptimConfig, emit: Emit, on_move: OnMove | None = None) -> None:
        """`on_move(slot, record)` hears every stage change once its optimizers are in step (the
        controller notes culls; the credit book forks and drops twins)."""
        self.host = host
        self.config = config
        self.emit = emit
        self.on_move = on_move
        self.lr = config.lr
        self.seed_lr = config.seed_lr or config.lr
        self.opt = make_optimizer(base_parameters(host), config, self.lr)
        self.seed_groups: dict[str, dict[str, Any]] = {}  # slot id → its seed's param group in `opt`
        self.fossil_order: list[str] = []  # slot ids whose seeds joined the host's group, in order
        self.version = 0  # bumped on every structural change (cached parameter lists go stale)
        self._host_params: list[nn.Parameter] = []
        self._host_param_count = 0
        self._host_params_version = -1
        self._trainable_params: list[nn.Parameter] = []
        self._trainable_version = -1

    # ------------------------------------------------------------------ reading
    def slot(self, slot_id: str) -> SeedSlot | None:
        return self.host.slots[slot_id] if slot_id in self.host.slots else None

    @property
    def host_group(self) -> dict[str, Any]:
        """The host's param group (its base parameters and every fossilized seed's)."""
        return self.opt.param_groups[0]

    def zero_grad(self) -> None:
        """Drop every gradient (host and seeds) in one pass over the model's parameters."""
        for p in self._trainable():
            p.grad = None

    def step(self) -> None:
        """One optimizer step of the host and of every live seed (one fused update)."""
        self.opt.step()

    def _trainable(self) -> list[nn.Parameter]:
        if self._trainable_version != self.version:
            self._trainable_params = [p for g in self.opt.param_groups for p in g["params"]]
            self._trainable_version = self.version
        return self._trainable_params

    def host_params(self) -> list[nn.Parameter]:
        """Host parameters for the gradient ratio (fossilized seeds included), cached per structure."""
        if self._host_params_version != self.version:
            self._host_params = host_parameters(self.host)
            self._host_param_count = sum(p.numel() for p in self._host_params)
            self._host_params_version = self.version
        return self._host_params

    def host_param_count(self) -> int:
        self.host_params()
        return self._host_param_count

    # ------------------------------------------------------------------ moves
    def germinate(self, slot_id: str, blueprint: str, cause: str) -> GateResult:
        slot = self.host.slots[slot_id]
        result = slot.germinate(blueprint, cause=cause)
        self.log_gate(slot_id, result)
        if result.passed:
            self.emit(ev.SeedGerminated, slot=slot_id, seed_id=slot.seed_id, blueprint=blueprint,
                      params=slot.seed_param_count())
        self.sync(slot)
        return result

    def advance(self, slot_id: str, force: bool, cause: str) -> GateResult:
        slot = self.host.slots[slot_id]
        result = slot.advance(force, cause=cause)
        self.log_gate(slot_id, result)
        self.sync(slot)
        return result

    def fossilize(self, slot_id: str, force: bool, cause: str) -> GateResult:
        slot = self.host.slots[slot_id]
        result = slot.fossilize(force, cause=cause)
        self.log_gate(slot_id, result)
        self.sync(slot)
        return result

    def cull(self, slot_id: str, reason: str, cause: str) -> TransitionCheck:
        slot = self.host.slots[slot_id]
        check = slot.cull(reason, cause=cause)
        self.sync(slot)
        return check

    def graft(self, slot_id: str, blueprint: str) -> None:
        """Build a seed into `slot_id` as plain host from the start (see `SeedSlot.graft_fossil`)."""
        slot = self.host.slots[slot_id]
        slot.graft_fossil(blueprint)
        self._join_host(slot_id, slot)
        self.version += 1

    def end_epoch(self) -> None:
        """Tick every slot's epoch clock (embargo countdown) and log what that changed."""
        for slot in self.host.slots.values():
            slot.end_epoch()
            self.sync(slot)

    def set_lr(self, value: float) -> None:
        """Set the learning rate of every optimizer (host and seeds; seeds behind the STE scaled)."""
        self.lr = self.seed_lr = value
        self.host_group["lr"] = value
        for sid in self.seed_groups:
            self._set_seed_lr(sid)

    def seed_lr_for(self, slot: SeedSlot) -> float:
        """A seed's learning rate in its stage: scaled down while it learns behind the STE."""
        if slot.stage in (Stage.GERMINATED, Stage.TRAINING):
            return self.seed_lr * self.config.training_lr_scale
        return self.seed_lr

    def _set_seed_lr(self, slot_id: str) -> None:
        self.seed_groups[slot_id]["lr"] = self.seed_lr_for(self.host.slots[slot_id])

    # ------------------------------------------------------------------ bookkeeping
    def sync(self, slot: SeedSlot) -> None:
        """Turn the slot's new transition records into events and keep the optimizers in step."""
        for record in slot.take_transitions():
            self._apply(slot, record)
            if self.on_move is not None:
                self.on_move(slot, record)
            self.emit(
                ev.StageChanged,
                slot=record.slot_id,
                seed_id=record.seed_id,
                blueprint=record.blueprint,
                from_stage=record.source,
                to_stage=record.target,
                cause=record.cause,
                forced=record.forced,
                reason=record.reason,
                gate=record.gate,
            )

    def _apply(self, slot: SeedSlot, record: TransitionRecord) -> None:
        sid = slot.slot_id
        if record.target is Stage.GERMINATED and slot.seed is not None:
            self._add_seed_group(sid, list(slot.seed.parameters()), self.seed_lr_for(slot))
        elif record.target is Stage.BLENDING and sid in self.seed_groups:
            self._set_seed_lr(sid)  # out from behind the STE: the seed now learns at full step
        elif record.target is Stage.CULLED:
            self._drop_seed_group(sid)
        elif record.target is Stage.FOSSILIZED and slot.seed is not None:
            self._drop_seed_group(sid)
            self._join_host(sid, slot)
        self.version += 1

    def _add_seed_group(self, slot_id: str, params: list[nn.Parameter], lr: float) -> None:
        self.opt.add_param_group({"params": params, "lr": lr})
        self.seed_groups[slot_id] = self.opt.param_groups[-1]

    def _drop_seed_group(self, slot_id: str) -> None:
        """Forget a seed's param group and its optimizer state (a culled seed; a fossil starts afresh
        in the host's group, as a seed built into the host would)."""
        group = self.seed_groups.pop(slot_id, None)
        if group is None:
            return
        self.opt.param_groups[:] = [g for g in self.opt.param_groups if g is not group]
        for p in group["params"]:
            self.opt.state.pop(p, None)

    def _join_host(self, slot_id: str, slot: SeedSlot) -> None:
        # The seed is plain host now: its parameters join the host optimizer's own group (one group,
        # one fused update per step, exactly like a model that was built this size).
        fold_in(self.opt, list(slot.seed.parameters()))
        self.fossil_order.append(slot_id)

    def log_gate(self, slot_id: str, result: GateResult) -> None:
        """Log one gate verdict (`gate_evaluated`); an illegal edge has no gate and logs nothing."""
        if result.gate is None:
            return
        self.emit(ev.GateEvaluated, slot=slot_id, gate=result.gate, target=result.target,
                  passed=result.passed, checks=list(result.checks), forced=result.forced)

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """The optimizer state split per group: `host_opt` and `seed_opts` by slot (see `split_state`)."""
        host, *seeds = split_state(self.opt.state_dict())
        return {
            "lr": self.lr,
            "seed_lr": self.seed_lr,
            "host_opt": host,
            "fossil_order": list(self.fossil_order),
            "seed_opts": dict(zip(self.seed_groups, seeds)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the optimizer with the saved structure (slots must already hold their seeds)."""
        self.lr, self.seed_lr = float(state["lr"]), float(state["seed_lr"])
        self.fossil_order = list(state["fossil_order"])
        params = base_parameters(self.host)
        for sid in self.fossil_order:  # the same parameter order as when they were folded in
            params.extend(self.host.slots[sid].seed.parameters())
        self.opt = make_optimizer(params, self.config, self.lr)
        self.seed_groups = {}
        for sid in state["seed_opts"]:
            slot = self.host.slots[sid]
            self._add_seed_group(sid, list(slot.seed.parameters()), self.seed_lr_for(slot))
        self.opt.load_state_dict(join_states([state["host_opt"], *state["seed_opts"].values()]))
        self.seed_groups = dict(zip(self.seed_groups, self.opt.param_groups[1:]))  # load_state_dict made new dicts
        self.version += 1
