"""Credit: how many accuracy points a live seed really adds, with an interval and the method used.

Three estimators (SPEC §3, issue 7), all comparing two arms example by example on the validation set:
- `ablation`: the model as it is vs the same model with the seed's alpha forced to 0. This measures
  *removal damage* of a network that co-adapted to the seed (downstream BatchNorm statistics and
  weights), not what the seed adds: it overstated the real gain by ~11 points on the default task.
- `ablation_bn`: the same two arms, each with its BatchNorm statistics re-estimated on a few training
  batches first, so neither arm is judged with statistics fitted to the other.
- `shadow_twin`: the model vs a *twin*: a copy of the host taken the moment the seed began blending,
  with that seed removed, trained on the very same batches with the same optimizer state since. A
  seed in TRAINING never changes the host, so the twin is the seedless run itself, grown alongside.
  It costs one more training step per step while the seed is on trial.

The estimate is the mean per-example difference over the last `window` epochs (in points); its
interval is a paired bootstrap over validation examples. Knows nothing of the epoch loop, the log or
the UI: the trainer calls `on_move`, `train_step`, `measure` and carries `state_dict`.
"""

from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from engine.config import CreditConfig, OptimConfig
from engine.lifecycle import COUNTERFACTUAL_STAGES, Stage
from engine.objective import Reduce, evaluate, task_loss
from engine.seedbank import SeedBank
from engine.slot import SeedSlot, TransitionRecord

Wrap = Callable[[nn.Module], nn.Module]  # a model → the module its training steps go through (DDP)
CREDIT_METHODS = ("shadow_twin", "ablation_bn", "ablation")
Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]


def paired_interval(diff: torch.Tensor, confidence: float, samples: int, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of per-example differences `diff` (N,), in points, by paired bootstrap.

    Resamples examples with replacement `samples` times (chunked so memory stays ~4M indices) on the
    device, with a private generator: the same data give the same interval. One sync at the end.
    """
    n = diff.numel()
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    gen = torch.Generator(device=diff.device).manual_seed(seed)
    chunk = max(1, 4_000_000 // n)
    means = []
    for start in range(0, samples, chunk):
        rows = min(chunk, samples - start)
        idx = torch.randint(0, n, (rows, n), generator=gen, device=diff.device)
        means.append(diff[idx].mean(dim=1))
    boot = torch.cat(means)
    tail = (1.0 - confidence) / 2.0
    q = torch.tensor([tail, 1.0 - tail], device=diff.device, dtype=boot.dtype)
    low, high = torch.quantile(boot, q)
    mean, low, high = (100.0 * torch.stack([diff.mean(), low, high])).tolist()
    return mean, low, high


@contextmanager
def recalibrated_bn(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """Inside: every BatchNorm of `model` holds statistics re-estimated on `batches` (cumulative
    average, train-mode forwards without gradients). Statistics, momentum and mode are restored after."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:
        yield
        return
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
             for m in norms]
    was_training = model.training
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every batch counts the same
        model.train()
        with torch.no_grad():
            for x, _ in batches:
                model(x)
        model.eval()
        yield
    finally:
        for m, (mean, var, tracked, momentum) in zip(norms, saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(tracked)
            m.momentum = momentum
        model.train(was_training)


class Twin:
    """The seedless counterpart of one seed: a host copy without it, with its own optimizers.

    The other slots are copied as they were at the fork (their seeds keep training and ramping in the
    twin, but later lifecycle moves of the real run are not mirrored).
    """

    def __init__(self, slot_id: str, seed_id: str | None, host: nn.Module, bank: SeedBank,
                 wrap: Wrap | None = None) -> None:
        self.slot_id, self.seed_id, self.host, self.bank = slot_id, seed_id, host, bank
        # Under torchrun the twin trains through its own DDP wrapper (every rank's twin sees the
        # global batch, like the host). Built at its first step, where every rank is in step.
        self.wrap = wrap
        self.model: nn.Module | None = None if wrap is not None else host

    @classmethod
    def fork(cls, slot: SeedSlot, host: nn.Module, bank: SeedBank, wrap: Wrap | None = None) -> Twin:
        twin_host = copy.deepcopy(host)
        twin_host.slots[slot.slot_id].clear()
        state = copy.deepcopy(bank.state_dict())
        state["seed_opts"].pop(slot.slot_id, None)
        twin_bank = SeedBank(twin_host, bank.config, _ignore, _ignore)
        twin_bank.load_state_dict(state)
        return cls(slot.slot_id, slot.seed_id, twin_host.train(), twin_bank, wrap)

    def step(self, x: torch.Tensor, y: torch.Tensor, amp) -> None:
        """One optimizer step on the same batch as the real run (no sync). The twin stays in train
        mode (`evaluate` restores the mode it found), so no per-step walk over its modules."""
        if self.model is None:
            assert self.wrap is not None
            self.model = self.wrap(self.host)
        with amp:
            loss = task_loss(self.model(x), y)
        self.bank.zero_grad()
        loss.backward()
        self.bank.step()
        self.host.on_optimizer_step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "slot": self.slot_id,
            "seed_id": self.seed_id,
            "model": self.host.state_dict(),
            "slots": {sid: s.export_state() for sid, s in self.host.slots.items()},
            "bank": self.bank.state_dict(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], build_host: Callable[[], nn.Module], optim: OptimConfig,
                   wrap: Wrap | None = None) -> Twin:
        """Rebuild a saved twin; `build_host` makes a fresh host on the run's device."""
        host = build_host()
        for sid, slot_state in state["slots"].items():
            host.slots[sid].import_state(slot_state)
        host.load_state_dict(state["model"])
        bank = SeedBank(host, optim, _ignore, _ignore)
        bank.load_state_dict(state["bank"])
        return cls(state["slot"], state["seed_id"], host.train(), bank, wrap)


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    """A twin's moves are not the run's: nothing it does is logged."""


class CreditBook:
    """Per live seed: its twin (shadow_twin), its window of per-example differences, its estimate."""

    def __init__(
        self,
        config: CreditConfig,
        host: nn.Module,
        bank: SeedBank,
        *,
        val_batches: Batches,
        calibration_batches: Batches,
        amp: Any,
        build_host: Callable[[], nn.Module],
        reduce: Reduce | None = None,
        wrap: Wrap | None = None,
    ) -> None:
        """`reduce` and `wrap` are for distributed runs: validation shards merged, twins under DDP."""
        self.config = config
        self.reduce, self.wrap = reduce, wrap
        self.host = host
        self.bank = bank
        self.val_batches = val_batches
        self.calibration_batches = calibration_batches
        self.amp = amp
        self.build_host = build_host
        self.twins: dict[str, Twin] = {}
        self.windows: dict[tuple[str, str], deque[torch.Tensor]] = {}  # (slot, method) → diffs
        self.seconds = 0.0  # wall time spent on credit (twin steps + measuring); the trainer reads it

    @property
    def methods(self) -> tuple[str, ...]:
        """The estimators run each epoch: the configured one first, then (compare) all the others."""
        rest = tuple(m for m in CREDIT_METHODS if m != self.config.method) if self.config.compare else ()
        return (self.config.method, *rest)

    # ------------------------------------------------------------------ lifecycle hooks
    def on_move(self, slot: SeedSlot, record: TransitionRecord) -> None:
        """Follow one stage change: fork a twin as blending starts, drop what a seed leaves behind."""
        sid = slot.slot_id
        if record.target is Stage.BLENDING:
            self.forget(sid)
            if "shadow_twin" in self.methods:
                started = time.perf_counter()
                self.twins[sid] = Twin.fork(slot, self.host, self.bank, self.wrap)
                self.seconds += time.perf_counter() - started
        elif record.target not in COUNTERFACTUAL_STAGES:
            self.forget(sid)

    def forget(self, slot_id: str) -> None:
        self.twins.pop(slot_id, None)
        for key in [k for k in self.windows if k[0] == slot_id]:
            del self.windows[key]

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Step every twin on the batch the real run just stepped on (host time only: no sync)."""
        if not self.twins:
            return
        started = time.perf_counter()
        for twin in self.twins.values():
            twin.step(x, y, self.amp)
        self.seconds += time.perf_counter() - started

    def take_seconds(self) -> float:
        """Credit time since the last call (per epoch in `epoch_completed.credit_time_s`)."""
        out, self.seconds = self.seconds, 0.0
        return out

    def set_lr(self, value: float) -> None:
        for twin in self.twins.values():
            twin.bank.set_lr(value)

    # ------------------------------------------------------------------ measuring
    def method_for(self, slot_id: str, method: str | None = None) -> str:
        """The estimator a slot really gets: shadow_twin needs a twin forked at blend start; a seed
        without one (e.g. a run resumed from a checkpoint of an older format) falls back to ablation_bn."""
        method = method or self.config.method
        if method == "shadow_twin" and slot_id not in self.twins:
            return "ablation_bn"
        return method

    def measure(self, slot: SeedSlot, main_correct: torch.Tensor) -> None:
        """Estimate `slot`'s credit this epoch and record it in the slot's metrics.

        `main_correct` is the real model's per-example correctness from this epoch's validation.
        With `compare`, the other estimators' results go to `metrics.credit_compare` (diagnostics).
        """
        started = time.perf_counter()
        sid = slot.slot_id
        others: dict[str, list[float]] = {}
        for i, wanted in enumerate(self.methods):
            method = self.method_for(sid, wanted)
            diff = self._difference(slot, method, main_correct)
            window = self.windows.setdefault((sid, method), deque(maxlen=self.config.window))
            window.append(diff.detach())
            pooled = torch.stack(tuple(window)).mean(dim=0)
            value, low, high = paired_interval(pooled, self.config.confidence, self.config.bootstrap_samples)
            if i == 0:
                slot.metrics.record_credit(value, low, high, method)
            else:
                others[method] = [value, low, high]
        slot.metrics.credit_compare = others or None
        self.seconds += time.perf_counter() - started

    def _difference(self, slot: SeedSlot, method: str, main_correct: torch.Tensor) -> torch.Tensor:
        """Per-example correctness with the seed minus without it, by `method` (N,) on the device."""
        sid = slot.slot_id
        if method == "shadow_twin":
            return main_correct - self._correct(self.twins[sid].host)
        if method == "ablation":
            with slot.counterfactual():
                return main_correct - self._correct(self.host)
        with recalibrated_bn(self.host, self.calibration_batches()):
            with_seed = self._correct(self.host)
        with slot.counterfactual(), recalibrated_bn(self.host, self.calibration_batches()):
            without = self._correct(self.host)
        return with_seed - without

    def _correct(self, model: nn.Module) -> torch.Tensor:
        return evaluate(model, self.val_batches(), self.amp, self.reduce).correct

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {
            "twins": {sid: t.state_dict() for sid, t in self.twins.items()},
            "windows": {f"{sid}/{method}": [d.cpu() for d in w] for (sid, method), w in self.windows.items()},
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore twins and windows (a checkpoint without them restores none: ablation_bn fallback)."""
        self.twins, self.windows = {}, {}
        if not state:
            return
        device = self.host.slots[next(iter(self.host.slots))].alpha_t.device
        for sid, twin_state in state["twins"].items():
            self.twins[sid] = Twin.from_state(twin_state, self.build_host, self.bank.config, self.wrap)
        for key, diffs in state["windows"].items():
            sid, _, method = key.rpartition("/")
            self.windows[(sid, method)] = deque((d.to(device) for d in diffs), maxlen=self.config.window)
