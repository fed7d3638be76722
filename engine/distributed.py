"""Several processes, one run (torchrun + DDP): rank 0 decides, every rank applies the same orders.

Under `torchrun` each process runs the same `Trainer` on its shard of the training data, its
gradients averaged by DDP. Growth changes the model's structure, and ranks that decided such changes
for themselves would diverge or deadlock, so only rank 0 (the *leader*) decides anything: operator
commands, the autopilot, gate-driven advances, probation timeouts, governor rollbacks. At each safe
point it broadcasts what it applied as `Orders`, an ordered tuple of acts; the followers apply the
same acts in the same order at the same step. The leader's gates have already judged, so a follower
applies a move without judging it again (`apply_decision(..., follow=True)`): its own numbers, even
if they drifted, can never make it refuse what rank 0 did.

After every structural change (and at the start and end) the ranks compare `state_checksum`s: the
bits of every parameter and buffer and the lifecycle state of every slot. Any difference stops the
run (`RanksDiverged`); a collective that fails or waits longer than the timeout (a rank died or
hangs) stops it too (`RanksLost`), never a silent hang.

Validation is sharded like training (rank r evaluates every world-th batch) and reduced: every rank
ends with the global loss and the global per-example correctness, so credit estimates and every
decision read global numbers. Nothing here knows the UI.
"""

from __future__ import annotations

import datetime
import gc
import hashlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Union

import torch
import torch.distributed as dist
from torch import nn

from engine.commands import AutopilotCommand, SetLrCommand
from engine.decisions import Decision
from engine.lifecycle import Stage

DEFAULT_TIMEOUT_S = 300.0


class RanksLost(RuntimeError):
    """A collective failed or timed out: another rank died or hangs."""


class RanksDiverged(RuntimeError):
    """The ranks' parameters or lifecycle state differ after a structural change."""


@dataclass(frozen=True, slots=True)
class Rollback:
    """The governor's verdict, as the leader took it: every rank restores its last good snapshot."""

    trigger: str
    loss: float


Act = Union[Decision, SetLrCommand, AutopilotCommand, Rollback]


@dataclass(frozen=True, slots=True)
class Orders:
    """What the leader applied since its last orders, for every follower to apply in this order.

    `verify` names what changed the structure (the ranks compare checksums once the acts are
    applied); `wait`: the leader is still waiting here (paused), more orders follow at this safe
    point; `stop`: the run stops here, with this cause.
    """

    acts: tuple[Act, ...] = ()
    verify: str | None = None
    wait: bool = False
    stop: str | None = None


def describe_act(act: Act) -> str:
    """A short label for a ranks_verified trigger ("germinate r1 (operator)")."""
    if isinstance(act, Decision):
        return f"{act.action} {act.slot} ({act.cause})"
    if isinstance(act, Rollback):
        return f"rollback ({act.trigger})"
    return act.command


class Ranks:
    """This process's place in the process group, and the collectives the trainer needs."""

    def __init__(self, rank: int, world_size: int, local_rank: int, backend: str, timeout_s: float) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.backend, self.timeout_s = backend, timeout_s

    @classmethod
    def from_env(cls, device: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Ranks | None:
        """Join the process group torchrun describes (WORLD_SIZE > 1), or None for a single process.

        gloo on CPU, nccl on CUDA (`device` as in the config: auto, cpu, cuda, cuda:N).
        """
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        backend = "nccl" if cuda else "gloo"
        if cuda:
            torch.cuda.set_device(local_rank)
        timeout = datetime.timedelta(seconds=timeout_s)
        dist.init_process_group(backend, store=_attempt_store(rank, world, timeout), rank=rank,
                                world_size=world, timeout=timeout)
        return cls(rank, world, local_rank, backend, timeout_s)

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """`run_started.distributed`: the world, the backend, the rank that writes the log."""
        return {"world_size": self.world_size, "backend": self.backend, "rank": self.rank,
                "timeout_s": self.timeout_s}

    # ------------------------------------------------------------------ collectives
    @contextmanager
    def collective(self, what: str, *, only_lost: bool = False) -> Iterator[None]:
        """Turn a collective's failure (a timeout, a closed connection) into RanksLost saying what.

        `only_lost`: the block also does other work (a training step, whose backward pass all-reduces
        inside DDP), so only errors that look like a lost rank are converted; a genuine bug in the
        step keeps its own type and message.
        """
        try:
            yield
        except (RuntimeError, ConnectionError) as exc:  # DistBackendError is a RuntimeError
            if only_lost and not _looks_lost(exc):
                raise
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise RanksLost(
                f"rank {self.rank} of {self.world_size}: the other ranks did not answer ({what}) within "
                f"{self.timeout_s:g} s or their connection closed: a rank died or hangs (torchrun's output "
                f"says which). {first}"
            ) from None

    def broadcast(self, orders: Orders | None) -> Orders:
        """The leader sends `orders`; a follower passes None and gets the leader's."""
        box = [orders]
        with self.collective("waiting for the leader's orders"):
            dist.broadcast_object_list(box, src=0, device=self._object_device())
        return box[0]

    def sum_(self, tensor: torch.Tensor, what: str) -> torch.Tensor:
        """All-reduce `tensor` in place (sum over ranks)."""
        with self.collective(what):
            dist.all_reduce(tensor)
        return tensor

    def gather_objects(self, value: Any, what: str) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        with self.collective(what):
            dist.all_gather_object(out, value)
        return out

    def share_buffers(self, modules: list[nn.Module]) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics) of `modules`, as DDP does at the start
        of each forward: after an epoch's last step each rank holds its own batch's statistics, and
        validation and the checksums must see one set. One broadcast per dtype."""
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for module in modules:
            for buffer in module.buffers():
                by_dtype.setdefault(buffer.dtype, []).append(buffer)
        with self.collective("sharing rank 0's buffers"):
            for buffers in by_dtype.values():
                flat = torch.cat([b.detach().reshape(-1) for b in buffers])
                dist.broadcast(flat, src=0)
                offset = 0
                for b in buffers:
                    b.copy_(flat[offset: offset + b.numel()].view_as(b))
                    offset += b.numel()

    def agree(self, error: str | None) -> str | None:
        """Every rank says whether it could start; the first rank's error (by rank), or None."""
        for rank, message in enumerate(self.gather_objects(error, "agreeing to start")):
            if message is not None:
                return message if rank == self.rank or rank == 0 else f"rank {rank}: {message}"
        return None

    def reduce_evaluation(self, loss_sum: torch.Tensor, count: int,
                          correct: torch.Tensor) -> tuple[torch.Tensor, int, torch.Tensor]:
        """One shard's validation → the whole set's: summed loss and targets, and every rank's
        per-example correctness concatenated in rank order (the same order for every model
        evaluated, so paired credit estimates stay paired)."""
        device = correct.device
        stats = torch.stack([loss_sum.float().reshape(()), torch.tensor(float(count), device=device),
                             torch.tensor(float(correct.numel()), device=device)])
        parts = [torch.empty_like(stats) for _ in range(self.world_size)]
        with self.collective("reducing validation"):
            dist.all_gather(parts, stats)
            table = torch.stack(parts).tolist()
            longest = int(max(row[2] for row in table))
            padded = torch.zeros(longest, dtype=correct.dtype, device=device)
            padded[: correct.numel()] = correct
            shards = [torch.empty_like(padded) for _ in range(self.world_size)]
            dist.all_gather(shards, padded)
        merged = torch.cat([s[: int(row[2])] for s, row in zip(shards, table)])
        total = torch.tensor(sum(row[0] for row in table), device=device)
        return total, int(sum(row[1] for row in table)), merged

    def shard(self, batches: Iterator[Any], steps: int | None = None) -> Iterator[Any]:
        """This rank's share: every world-th batch from its rank on (`steps` of them at most)."""
        from itertools import islice

        stop = None if steps is None else self.rank + steps * self.world_size
        return islice(batches, self.rank, stop, self.world_size)

    # ------------------------------------------------------------------ the model
    def wrap(self, module: nn.Module) -> nn.Module:
        """A DDP wrapper for the model as it is now (rebuilt after every structural change).

        A GERMINATED seed is built but not yet in the forward pass, so its parameters get no
        gradient: only then does DDP have to search the graph for unused parameters (a cost per step).
        No initial broadcast: the ranks have just compared checksums, so rank 0's weights are
        already everyone's, and a broadcast would hide a divergence instead of reporting it. No
        buffer broadcast before each forward either: in training mode BatchNorm normalizes with the
        batch's own statistics, so the running statistics never shape a step; `share_buffers` gives
        every rank rank 0's where they are read (validation, checksums), saving a collective a step.
        """
        from torch.nn.parallel import DistributedDataParallel

        slots: Mapping[str, Any] = getattr(module, "slots", {})
        unused = any(s.stage is Stage.GERMINATED for s in slots.values())
        ids = [self.local_rank] if self.backend == "nccl" else None
        with self.collective("rebuilding the DDP wrapper"):
            return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=unused,
                                           init_sync=False, **_NO_BUFFER_SYNC)

    def close(self) -> None:
        """Leave the process group (after the caller dropped its DDP wrappers)."""
        gc.collect()  # DDP's reducer must be gone first, or some runs abort in destroy (measured)
        if dist.is_initialized():
            dist.destroy_process_group()

    def _object_device(self) -> torch.device | None:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else None


def _attempt_store(rank: int, world: int, timeout: datetime.timedelta) -> dist.Store:
    """The rendezvous store for this attempt of the job.

    torchrun's agent keeps one store across `--max-restarts` attempts, so a restarted rank could read
    the gloo address a dead rank of the previous attempt published and fail to connect (measured: one
    restart in two failed so, or hung). A prefix per attempt (TORCHELASTIC_RESTART_COUNT) keeps each
    attempt's keys apart.
    """
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=not agent_store and rank == 0, timeout=timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"esper/attempt_{attempt}/", store)


def _no_buffer_sync() -> dict[str, bool]:
    """DDP's switch for "no buffer broadcast before each forward", under its name in this torch
    (`broadcast_buffers` is deprecated from 2.12 in favour of `forward_sync_buffers`)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


_NO_BUFFER_SYNC = _no_buffer_sync()


# What a collective's failure says when a peer is gone (gloo, nccl and the c10d store word it differently).
_LOST_MARKERS = ("timeout", "timed out", "connection", "closed", "closure", "peer", "broken pipe",
                 "nccl", "gloo", "watchdog")


def _looks_lost(exc: BaseException) -> bool:
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _LOST_MARKERS)


def diverged_ranks(checksums: list[dict[str, str]]) -> list[int]:
    """The ranks whose checksum differs from rank 0's."""
    return [rank for rank, c in enumerate(checksums) if c != checksums[0]]


def state_checksum(host: nn.Module, version: int, step: int) -> dict[str, str]:
    """Digests of the model's bits (every parameter and buffer, by name) and of its lifecycle state
    (each slot's stage, seed, alpha and clocks, the bank's structure version and the optimizer step:
    a move applied one step apart on two ranks shows here).

    Exact, not approximate: DDP gives every rank the same averaged gradient, so replicas that agree
    agree bit for bit. Runs only at structural changes, so one pass over the tensors is fine here.
    """
    weights = hashlib.sha256()
    for name, tensor in host.state_dict().items():
        weights.update(name.encode())
        weights.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy().tobytes())
    lifecycle = hashlib.sha256(f"{version}/{step}".encode())
    for sid, slot in host.slots.items():
        state = slot.export_state()
        fields = (sid, state["stage"], state["blueprint"], state["seed_id"], state["epochs_in_stage"],
                  state["embargo_left"], state["blend_step"], repr(state["alpha"]), state["seeds_created"])
        lifecycle.update(repr(fields).encode())
    return {"params": weights.hexdigest()[:16], "lifecycle": lifecycle.hexdigest()[:16]}
