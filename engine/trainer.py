"""The epoch loop that ties the engine together and tells the run log everything it does.

Per epoch: train (safe points between optimizer steps, where `RunControl` drains operator
commands), validate, the review of every seed (`EpochReview`: credit, probation timeouts, gates),
`epoch_completed`, the autopilot, checkpoint, governor snapshot. Every structural change, whoever
takes it, is a `Decision` applied by `_decide` (`engine.decisions.apply_decision`). The hot path
keeps losses and gradient norms on the device and reads them back once every `sync_every` steps
(one transfer), never per step or per tensor.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import os
import platform
import signal
import sys
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine import blueprints, checkpoint, objective
from engine.commands import AutopilotCommand, Command, SetLrCommand, command_to_wire
from engine.config import RunConfig
from engine.control import CommandServer, ControlError
from engine.run_control import RunControl, StopRun
from engine.controller import Controller, ControllerView, SlotView
from engine.credit import CreditBook
from engine.decisions import MOVES, Decision, Outcome, apply_decision
from engine.distributed import (Act, Orders, Ranks, RanksDiverged, Rollback, describe_act, diverged_ranks,
                                state_checksum)
from engine.fork import ForkSource, keep_for_forks
from engine.gates import GateResult
from engine.governor import LossWatch
from engine.hosts import CNNHost, TransformerHost
from engine.hosts.base import base_param_count
from engine.isolation import grad_sq_norms
from engine.lifecycle import LIVE_STAGES, Stage
from engine.objective import Evaluation, task_loss
from engine.review import EpochReview
from engine.checkpoint import RunSnapshot
from engine.rundir import LOG_NAME, RunDir, StartError
from engine.seedbank import SeedBank
from engine.slot import SeedSlot, TransitionRecord
from engine.tasks import Task, TaskDataError, load_task
from engine.telemetry import events as ev
from engine.telemetry.logwriter import LogWriteError, RunLogWriter
from engine.telemetry.runlog import last_seq
from engine.telemetry.sink import Emitter, EventSink, FanOut

class RunDiverged(RuntimeError):
    """The loss blew up again and again right after rollbacks: stop rather than loop forever."""


def resolve_device(spec: str) -> torch.device:
    """`auto` → CUDA when available, else CPU; anything else as given (validated by torch)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available here; use --device cpu")
    return device


def build_host(task: Task, config: RunConfig) -> nn.Module:
    """The host network that fits `task`, with the run's size overrides and lifecycle settings."""
    kwargs = {**task.host_kwargs, **config.host}
    if task.topology == "cnn":
        return CNNHost(**kwargs, lifecycle=config.lifecycle)
    return TransformerHost(**kwargs, lifecycle=config.lifecycle)


class Trainer:
    """Runs one training job in RUN_DIR, writing RUN_DIR/events.jsonl. `run()` returns an exit code.

    Construction claims the run directory (lock, ownership, no run overwritten unless `overwrite`)
    and, with `resume`, reads its checkpoint; both raise `StartError` (exit code 2) before anything
    in the directory is written. With `resume` the checkpoint's config is used, `epochs` (if given)
    moving the end of the run, never before the epoch already reached.
    """

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        *,
        resume: bool = False,
        overwrite: bool = False,
        epochs: int | None = None,
        sinks: tuple[EventSink, ...] = (),
        serve_commands: bool = True,
        ranks: Ranks | None = None,
        fork: ForkSource | None = None,
    ) -> None:
        """`ranks`: this process's place under torchrun (None: a single process). Only rank 0 claims
        the directory, writes the log and serves commands; every rank reads the checkpoint.
        `fork`: start a new run in `run_dir` from another run's kept checkpoint (engine.fork); it then
        goes on as a resume of that state would."""
        self.run_dir = Path(run_dir)
        self.ranks = ranks
        self.leads = ranks is None or ranks.is_leader  # decides, writes the log, serves the socket
        self.claim: RunDir | None = None
        self.writer: RunLogWriter | None = None
        log_path = self.run_dir / LOG_NAME
        if self.leads:
            self.claim = RunDir.claim(self.run_dir, "resume" if resume else "overwrite" if overwrite else "new")
        self.forked_from: dict | None = None
        try:
            if fork is not None:  # every rank reads the source's file; rank 0 copies it and the log
                saved = checkpoint.load_run(fork.checkpoint)
                source_id = fork.copy_into(self.run_dir, saved.seq) if self.leads else None
                self.forked_from = fork.describe(source_id)
                resume = True
            else:
                saved = checkpoint.load_run(self.run_dir) if resume else None
            self.config = _resumed_config(saved, epochs, self.run_dir) if saved else config
            if self.leads:
                self.writer = RunLogWriter(log_path, append=resume)
        except BaseException:
            if self.claim is not None:
                self.claim.release()
            raise
        sink = FanOut(self.writer, *sinks) if self.writer is not None else FanOut()
        self.emitter = Emitter(sink, start_seq=last_seq(log_path) if resume and self.leads else 0)
        self.serve_commands = serve_commands and self.leads
        self.control = RunControl(self.emit, lambda: self.emitter.flush(fsync=True), self._apply_command,
                                  self.config.min_epoch_seconds)
        self.run_id = uuid.uuid4().hex[:12]
        self.epoch = 0
        self.step = 0
        self.autopilot = self.config.autopilot
        self.val_losses: list[float] = []
        self.val_accuracies: list[float] = []
        self.rollbacks_in_a_row = 0
        self._autopilot_said: str | None = None  # the AutopilotWaiting reason last logged
        self.checkpoint_epoch: int | None = saved.epoch if saved else None
        self._in_epoch = False
        self._hung_up = False
        self._saved = saved
        self._built = False
        # Distributed runs: what the leader applied since its last orders, and the structure
        # (bank.version) the ranks last verified and the DDP wrapper was last built for.
        self._acts: list[Act] = []
        self._rolling_back = False
        self._verified_version = -1
        self._wrapped_version = -1

    # ================================================================== setup
    def _build(self) -> None:
        """Load the task, build host/optimizers, restore a checkpoint when resuming. Idempotent."""
        if self._built:
            return
        cfg = self.config
        torch.manual_seed(cfg.seed)
        self.device = resolve_device(cfg.device)
        if self.ranks is not None and self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", self.ranks.local_rank)  # one GPU per rank, as torchrun numbers them
        if self.device.type == "cpu":
            # Small models gain nothing from intra-op threads, and on a busy 2-core box two spinning
            # threads made an epoch 50x slower (measured): default to half the cores.
            torch.set_num_threads(cfg.threads or max(1, min(8, (os.cpu_count() or 2) // 2)))
        self.task = load_task(cfg.task, cfg.data_dir)
        self.host = build_host(self.task, cfg).to(self.device)
        # `net` evaluates; `model` trains (under torchrun: through DDP, rebuilt after each structural change).
        self.net = torch.compile(self.host) if cfg.compile else self.host
        self.model = self.net
        self.steps_per_epoch = self.task.steps_per_epoch(cfg.batch_size)
        if self.ranks is not None:
            # Every rank takes the same number of whole batches (a partial last batch would give the
            # ranks different shapes and unequal weight in DDP's average): the remainder is dropped.
            full = self.task.full_batches(cfg.batch_size)
            self.steps_per_epoch = full // self.ranks.world_size
            if self.steps_per_epoch < 1:
                raise TaskDataError(f"{full} whole training batches of {cfg.batch_size} cannot be shared by "
                                    f"{self.ranks.world_size} ranks; lower --batch-size or --nproc-per-node")
        for slot in self.host.slots.values():
            slot.steps_per_epoch = self.steps_per_epoch
        self.controller = Controller(cfg.controller)
        self.watch = LossWatch(cfg.governor)
        self.bank = SeedBank(self.host, cfg.optim, self.emit, self._on_move)
        self.data_gen = torch.Generator().manual_seed(cfg.seed)
        self.amp = (
            torch.autocast(self.device.type, dtype=torch.bfloat16) if cfg.bf16 else nullcontext()
        )
        self.credit = CreditBook(
            cfg.credit, self.host, self.bank,
            val_batches=self._val_batches,
            calibration_batches=self._calibration_batches,
            amp=self.amp,
            build_host=lambda: build_host(self.task, cfg).to(self.device),
            reduce=self.ranks.reduce_evaluation if self.ranks else None,
            wrap=self.ranks.wrap if self.ranks else None,
        )
        self.review = EpochReview(cfg, self.host.slots, self.credit, self.bank, self.emit)
        for sid, blueprint in cfg.fossils.items():
            if sid not in self.host.slots:
                raise ValueError(f"fossils: unknown slot {sid!r}; this host's slots are {', '.join(self.host.slots)}")
            self.bank.graft(sid, blueprint)
        if self._saved is not None:
            try:
                self._restore(self._saved)
            except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as exc:
                raise checkpoint.CheckpointError(
                    f"{self.run_dir / checkpoint.CHECKPOINT_NAME} does not fit this engine's {self.task.name} "
                    f"host ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                    "start a new run instead of --resume"
                ) from None
        self.snapshot = self._capture(copy=True)
        self._built = True

    def emit(self, kind: type, **fields: Any) -> Any:
        return self.emitter.emit(kind, **fields)

    def _on_move(self, slot: SeedSlot, record: TransitionRecord) -> None:
        if record.target is Stage.CULLED:
            self.controller.note_culled(record.blueprint, self.epoch)
        self.credit.on_move(slot, record)

    def _calibration_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The same few training batches every time (a private generator: training order untouched)."""
        gen = torch.Generator().manual_seed(self.config.seed)
        batches = self.task.batches("train", self.config.batch_size, gen, self.device)
        return itertools.islice(batches, self.config.credit.bn_batches)

    # ================================================================== the run
    def run(self) -> int:
        """Train to the end (or until stopped). 0 on success or a graceful stop (operator, SIGTERM),
        1 on a crash or a failed disk, 130 on Ctrl-C. The log always ends with a final event when
        any byte can still be written. A checkpoint that does not fit this task raises
        CheckpointError before anything is logged."""
        started = False
        try:
            with self._signals():
                code = self._run()
            started = True
            return code
        finally:
            if self.control.server is not None:
                self.control.server.close()
            self._drop_wrappers()
            try:
                if self.writer is not None:
                    self.writer.close()
            except OSError:
                pass  # already reported by _storage_failed; the log ends at its last whole line
            if self.claim is None:
                pass
            elif started or self.emitter.seq > 0:
                self.claim.release()
            else:  # refused before a single event: leave the directory as it was found
                self.claim.abandon()

    def _drop_wrappers(self) -> None:
        """Free the DDP wrappers (host and twins) before the process group goes (DESIGN.md facts)."""
        if self.ranks is None or not self._built:
            return
        self.model = self.net
        for twin in self.credit.twins.values():
            twin.model = None
        gc.collect()

    def _run(self) -> int:
        try:
            self._build()
            refused = None
        except (checkpoint.CheckpointError, TaskDataError) as exc:
            refused = exc  # nothing is logged yet: the caller says what is wrong (exit 2)
        except BaseException as exc:
            return self._crashed(exc)
        if self.ranks is not None:  # every rank starts, or none does (a lone rank would wait forever)
            message = self.ranks.agree(str(refused) if refused is not None else None)
            if message is not None and refused is None:
                refused = TaskDataError(message)
        if refused is not None:
            raise refused
        try:
            self._start_server()
            self._announce()
            stopped = False
            try:
                if self.ranks is not None:
                    self._verify("resume" if self._saved is not None else "start")
                while self.epoch < self.config.epochs:
                    self._safe_point()
                    self._run_epoch()
            except StopRun:
                stopped = True
            if self.ranks is not None:
                self._verify("stop" if stopped else "end")
            status = "stopped" if stopped or self.control.stop_requested else "completed"
            self._save_checkpoint()
            self.emit(ev.RunFinished, status=status, final=self._final_metrics())
            return 0
        except (LogWriteError, checkpoint.CheckpointWriteError) as exc:
            return self._storage_failed(exc)
        except BaseException as exc:  # the log must end with run_failed, whatever went wrong
            return self._crashed(exc)

    def _crashed(self, exc: BaseException) -> int:
        if not self.leads:  # a follower writes no log: torchrun's output is where its error shows
            print(f"error: rank {self.ranks.rank}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        try:
            self.emit(
                ev.RunFailed,
                error_type=type(exc).__name__,
                message=str(exc) or type(exc).__name__,
                traceback=traceback.format_exc(),
            )
        except LogWriteError as write_error:
            print(f"error: {write_error}", file=sys.stderr)
            traceback.print_exception(exc)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1

    def _storage_failed(self, exc: OSError) -> int:
        """The disk refused a write: stop, say so plainly, keep the last good checkpoint, end the log."""
        kept = (f"the checkpoint of epoch {self.checkpoint_epoch} in {self.run_dir} is intact"
                if self.checkpoint_epoch is not None else "there is no checkpoint to resume from "
                "(checkpoint_every=0 writes one only at the end)")
        resume = f"; free space, then continue with `esper-tui train --resume {self.run_dir}`" \
            if self.checkpoint_epoch is not None else ""
        message = (f"{exc}. Training stopped at epoch {self.epoch}, step {self.step}; the run log ends at its "
                   f"last complete line; {kept}{resume}")
        print(f"error: {message}", file=sys.stderr, flush=True)
        try:  # one short final line often still fits (the torn tail was cut off, freeing its space)
            self.emit(ev.RunFailed, error_type="StorageError", message=message, traceback="")
            self.emitter.flush(fsync=True)
        except OSError:
            pass
        return 1

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM stops gracefully like the operator's `stop`; SIGHUP detaches from the terminal."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return

        def on_term(signum: int, frame: object) -> None:
            self.control.stop(signal.Signals(signum).name)

        def on_hangup(signum: int, frame: object) -> None:
            # The terminal is gone: progress lines would fail (EIO) or block. Send them nowhere and
            # go on training; the log and the control socket are all a user needs to come back.
            devnull = os.open(os.devnull, os.O_WRONLY)
            for fd in (1, 2):
                os.dup2(devnull, fd)
            os.close(devnull)
            self._hung_up = True

        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_term),
                    signal.SIGHUP: signal.signal(signal.SIGHUP, on_hangup)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _announce(self) -> None:
        detach = {sid: s.blend_detach for sid, s in self.host.slots.items()}
        self.emit(
            ev.RunStarted,
            schema_version=ev.SCHEMA_VERSION,
            run_id=self.run_id,
            config=self.config.model_dump(mode="json"),
            task=self.task.name,
            topology=self.task.topology,
            slots=list(self.host.slots),
            isolation={
                "blend_detach": next(iter(detach.values())),
                "source": "config" if self.config.lifecycle.blend_detach is not None else "default",
                "training": "ste+detach",
            },
            device=str(self.device),
            versions={"engine": _engine_version(), "torch": torch.__version__, "python": platform.python_version()},
            planned_epochs=self.config.epochs,
            blueprints={n: blueprints.get(self.task.topology, n).description for n in blueprints.names(self.task.topology)},
            resumed=self._saved is not None,
            forked_from=self.forked_from,
            host_params=base_param_count(self.host),
            resumed_from_epoch=self._saved.epoch if self._saved else None,
            resumed_after_seq=self._saved.seq if self._saved else None,
            distributed=self.ranks.describe() if self.ranks else None,
        )

    def _start_server(self) -> None:
        if not self.serve_commands:
            return
        try:
            self.control.server = CommandServer(self.run_dir).start()
        except (ControlError, OSError) as exc:
            self.control.server = None
            self.emit(ev.WarningEvent, slot=None, code="control_unavailable",
                      message=f"operator commands are off for this run: {exc}")

    # ================================================================== ranks (torchrun)
    def _safe_point(self) -> None:
        """Between epochs: apply the operator's commands, wait while paused; StopRun to stop."""
        if self.ranks is None:
            self.control.safe_point()
        else:
            self._sync(drain=True)

    def _sync(self, *, drain: bool) -> bool:
        """A distributed safe point: the leader (draining its commands first when `drain`) sends what
        it applied; a follower applies the same acts in the same order. Raises StopRun on every rank
        when the leader stops. True when the orders rolled this follower back (its epoch ends here)."""
        assert self.ranks is not None
        if self.leads:
            stop = None
            if drain:
                self.control.tick = lambda: self._send(wait=True)  # paused: more orders will follow
                try:
                    self.control.safe_point()
                except StopRun:
                    stop = self.control.stop_cause
                finally:
                    self.control.tick = None
            self._send(stop=stop)
            if stop is not None:
                raise StopRun
            return False
        rolled = False
        while True:
            orders = self.ranks.broadcast(None)
            rolled = self._follow(orders.acts) or rolled
            if orders.verify is not None:
                self._verify(orders.verify)
            if orders.stop is not None:
                raise StopRun
            if not orders.wait:
                return rolled

    def _send(self, *, wait: bool = False, stop: str | None = None) -> None:
        """The leader's orders: its acts since the last ones, and a verification if the structure moved."""
        assert self.ranks is not None
        acts, self._acts = tuple(self._acts), []
        verify = None
        if self.bank.version != self._verified_version:
            verify = "; ".join(describe_act(a) for a in acts) or f"epoch {self.epoch} lifecycle clock"
        self.ranks.broadcast(Orders(acts, verify, wait, stop))
        if verify is not None:
            self._verify(verify)

    def _follow(self, acts: tuple[Act, ...]) -> bool:
        """Apply the leader's acts on this follower, in order. True when one was a rollback."""
        rolled = False
        for act in acts:
            match act:
                case Rollback(trigger=trigger, loss=loss):
                    self._rollback(trigger, loss)
                    rolled = True
                case Decision():
                    outcome = self._decide(act)
                    if not outcome.applied:
                        raise RanksDiverged(f"rank {self.ranks.rank} could not apply rank 0's "
                                            f"{describe_act(act)}: {outcome.reason}")
                case SetLrCommand(value=value):
                    self._set_lr(value)
                case AutopilotCommand(enabled=enabled):
                    self.autopilot = enabled
        return rolled

    def _verify(self, trigger: str) -> None:
        """Every rank compares its checksum with the others'; the leader logs it; divergence stops all."""
        assert self.ranks is not None
        self._share_buffers()
        mine = state_checksum(self.host, self.bank.version, self.step)
        sums = self.ranks.gather_objects(mine, f"comparing checksums after {trigger}")
        diverged = diverged_ranks(sums)
        self._verified_version = self.bank.version
        self.emit(ev.RanksVerified, in_sync=not diverged, checksums=sums, diverged=diverged, trigger=trigger)
        if diverged:
            raise RanksDiverged(
                f"rank {', '.join(map(str, diverged))} differ{'s' if len(diverged) == 1 else ''} from rank 0 after "
                f"{trigger} (parameters or lifecycle state; checksums {sums}). The run stops rather than train "
                f"replicas that disagree; resume from the last checkpoint with `--resume {self.run_dir}`"
            )

    def _share_buffers(self) -> None:
        assert self.ranks is not None
        with torch.no_grad():
            self.ranks.share_buffers([self.host, *(t.host for t in self.credit.twins.values())])

    def _rewrap(self) -> None:
        """A new DDP wrapper for the model's new structure (every rank, before the same step)."""
        assert self.ranks is not None
        # The old wrapper's reducer must be gone before the new one hooks the same parameters, or
        # both would all-reduce. Dropping the last reference frees it; a full collection (150 ms
        # here, measured) only when a reference cycle keeps it alive (torch.compile's caches).
        old = weakref.ref(self.model) if self.model is not self.net else None
        self.model = self.net
        if old is not None and old() is not None:
            gc.collect()
        wrapped = self.ranks.wrap(self.host)
        self.model = torch.compile(wrapped) if self.config.compile else wrapped
        self._wrapped_version = self.bank.version

    def _rank_drill(self) -> None:
        """Fault drills for distributed runs (`faults.rank_drill`): this rank misbehaves on purpose."""
        drill = self.config.faults.rank_drill
        if drill is None or self.ranks is None or drill.rank != self.ranks.rank or drill.epoch != self.epoch:
            return
        if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
            return  # a drill rehearses one failure: torchrun's restart must then get through
        if drill.kind == "exit":
            print(f"fault drill: rank {self.ranks.rank} exits at epoch {self.epoch}", file=sys.stderr, flush=True)
            os._exit(17)
        if drill.kind == "hang":
            print(f"fault drill: rank {self.ranks.rank} hangs at epoch {self.epoch}", file=sys.stderr, flush=True)
            while True:
                time.sleep(3600)
        if drill.kind == "perturb":
            with torch.no_grad():
                next(self.host.parameters()).view(-1)[0].add_(1e-3)

    # ================================================================== one epoch
    def _run_epoch(self) -> None:
        self.epoch += 1
        self.emitter.epoch = self.epoch
        self._in_epoch = True
        faults = self.config.faults
        if faults.crash_at_epoch == self.epoch:
            raise RuntimeError(f"fault drill: crash requested at epoch {self.epoch}")
        self._rank_drill()
        started = time.perf_counter()
        train_loss, train_acc, healthy, samples = self._train_epoch()
        val = self._evaluate()
        val_loss, val_acc = val.loss, val.accuracy
        self.val_losses.append(val_loss)
        self.val_accuracies.append(val_acc)
        self.review.measure(val, healthy)
        self.bank.end_epoch()
        elapsed = time.perf_counter() - started
        # What this epoch measured comes first; what is decided because of it follows in the log.
        self.emit(
            ev.EpochCompleted,
            train_loss=train_loss,
            train_accuracy=train_acc,
            val_loss=val_loss,
            val_accuracy=val_acc,
            epoch_time_s=elapsed,
            credit_time_s=self.credit.take_seconds(),
            samples_per_s=samples / elapsed if elapsed > 0 else None,
            slots=[self._slot_report(s) for s in self.host.slots.values()],
        )
        if self.leads:  # the followers apply what rank 0 decided here, at the sync just below
            for decision in self.review.timeouts():
                self._decide(decision)
            gates = self.review.gates()
            if self.autopilot:
                self._autopilot(gates)
        if self.ranks is not None:
            self._sync(drain=False)
        self._in_epoch = False
        if healthy:
            self.rollbacks_in_a_row = 0
        # Every epoch end, healthy or not: after a rollback the weights are the restored healthy
        # ones, and this epoch's lifecycle decisions must survive the next rollback.
        self.snapshot = self._capture(copy=True)
        every = self.config.checkpoint_every
        if every and self.epoch % every == 0:
            self._save_checkpoint()
            self._keep_fork_point()
        self.emitter.flush(fsync=True)
        if self._hung_up:
            self._hung_up = False
            self.emit(ev.WarningEvent, slot=None, code="terminal_hung_up",
                      message=f"the terminal hung up: the run goes on detached, without progress lines; "
                              f"watch it with `esper-tui attach {self.run_dir}`")
        if self.ranks is None:
            self.control.epoch_ended(self.epoch, started)
        elif self.leads:
            try:
                self.control.epoch_ended(self.epoch, started)
            except StopRun:
                pass  # said to every rank at the next safe point, which raises it again

    def _train_epoch(self) -> tuple[float | None, float | None, bool, int]:
        """One pass over the training data. Returns (mean loss, accuracy %, healthy, samples)."""
        cfg = self.config
        self.model.train()
        losses: list[torch.Tensor] = []
        grad_rows: list[tuple[tuple[str, ...], torch.Tensor]] = []
        seen_losses: list[float] = []
        correct = torch.zeros((), dtype=torch.long, device=self.device)  # long: no per-step dtype cast
        samples = targets = 0
        chunk_start = time.perf_counter()
        chunk_samples = 0
        batches = self._batches("train")
        if self.ranks is not None:
            batches = self.ranks.shard(batches, self.steps_per_epoch)
        last = self.steps_per_epoch - 1
        for i, (x, y) in enumerate(batches):
            if self.ranks is None and (self.control.stop_requested or self.control.has_pending()):
                self.control.safe_point()  # a stop (a signal) ends the run here: checkpoint, run_finished
            if self.ranks is not None and self._wrapped_version != self.bank.version:
                self._rewrap()
            with self._step_guard():
                loss, batch_correct = self._step(x, y, grad_rows=grad_rows,
                                                 measure=(self.step % cfg.grad_stats_every == 0 or i == last))
            losses.append(loss)
            correct += batch_correct
            samples += y.shape[0]
            targets += y.numel()
            chunk_samples += y.shape[0]
            if len(losses) >= cfg.sync_every or i == last:
                # The one host-device sync of this chunk: losses and gradient norms together.
                values = self._read_back(losses, grad_rows)
                losses, grad_rows = [], []
                now = time.perf_counter()
                rate = chunk_samples / (now - chunk_start) if now > chunk_start else None
                chunk_start, chunk_samples = now, 0
                world = self.ranks.world_size if self.ranks else 1
                self.emit(ev.StepMetrics, loss=values[-1], lr=self.bank.lr,
                          samples_per_s=rate * world if rate is not None else None)
                verdict = self.watch.judge(values) if cfg.governor.enabled and self.leads else None
                if verdict is not None:
                    self._rollback(*verdict)
                # Under torchrun this is the step's safe point: commands, the verdict, stop.
                followed_rollback = self.ranks is not None and self._sync(drain=True)
                if verdict is not None or followed_rollback:
                    return _mean(seen_losses), None, False, samples * world
                seen_losses.extend(values)
        if self.ranks is not None:  # the epoch's accuracy over every rank's batches
            totals = torch.stack([correct.double(), torch.tensor(float(targets), dtype=torch.float64,
                                                                   device=self.device)])
            correct_all, targets = self.ranks.sum_(totals, "summing the epoch's accuracy").tolist()
            samples *= self.ranks.world_size
            correct = correct_all
            self._share_buffers()  # validation and the credit read rank 0's BatchNorm statistics
        accuracy = 100.0 * float(correct) / targets if targets else None
        return _mean(seen_losses), accuracy, True, samples

    def _step_guard(self) -> contextlib.AbstractContextManager[None]:
        """Under torchrun a step all-reduces gradients inside DDP: a lost rank surfaces there."""
        if self.ranks is None:
            return contextlib.nullcontext()
        return self.ranks.collective("a training step's gradient all-reduce", only_lost=True)

    def _step(self, x: torch.Tensor, y: torch.Tensor, *, measure: bool,
              grad_rows: list[tuple[tuple[str, ...], torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step. Returns the detached loss and the number correct (device tensors)."""
        with self.amp:
            logits = self.model(x)
            loss = task_loss(logits, y)
        if self.config.faults.nan_loss_at_step == self.step:
            loss = loss * float("nan")
        self.bank.zero_grad()
        loss.backward()
        if measure:
            self._measure_gradients(grad_rows)
        self.bank.step()
        self.host.on_optimizer_step()
        self.credit.train_step(x, y)  # the shadow twins take the same step on the same batch
        self.step += 1
        self.emitter.step = self.step
        correct = (logits.detach().argmax(-1) == y).sum()
        return loss.detach().float(), correct

    def _measure_gradients(self, grad_rows: list[tuple[tuple[str, ...], torch.Tensor]]) -> None:
        """Squared grad norms of every seed that is learning, and of the host, on the device."""
        learning = tuple(
            sid for sid, s in self.host.slots.items()
            if s.seed is not None and s.stage in (Stage.TRAINING, Stage.BLENDING, Stage.SHADOWING, Stage.PROBATIONARY)
        )
        if not learning:
            return
        groups = [self.host.slots[sid].seed_parameters() for sid in learning] + [self.bank.host_params()]
        grad_rows.append((learning, grad_sq_norms(groups)))

    def _read_back(self, losses: list[torch.Tensor],
                   grad_rows: list[tuple[tuple[str, ...], torch.Tensor]]) -> list[float]:
        stacked = torch.stack(losses)
        if self.ranks is not None:
            # The global step losses (the governor judges these), and whether any rank was asked to
            # stop (a SIGTERM to one rank stops them all, gracefully, through rank 0): one collective.
            wants_stop = torch.tensor([float(self.control.stop_requested)], device=stacked.device)
            reduced = self.ranks.sum_(torch.cat([stacked, wants_stop]), "averaging step losses")
            stacked = reduced[:-1] / self.ranks.world_size
            if self.leads and bool(reduced[-1] > 0) and not self.control.stop_requested:
                self.control.stop("SIGTERM to another rank")
        flat = torch.cat([stacked] + [row for _, row in grad_rows]).tolist()
        values, offset = flat[: len(losses)], len(losses)
        n_host = self.bank.host_param_count()
        for sids, row in grad_rows:
            width = row.numel()
            part = flat[offset: offset + width]
            offset += width
            host_sq = part[-1]
            for sid, seed_sq in zip(sids, part[:-1]):
                slot = self.host.slots[sid]
                if slot.seed is not None:
                    slot.metrics.record_gradients(seed_sq, slot.seed_param_count(), host_sq, n_host)
        return values

    def _batches(self, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.task.batches(split, self.config.batch_size, self.data_gen, self.device)

    def _val_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The validation set, or under torchrun this rank's shard of it (merged by `evaluate`)."""
        batches = self._batches("val")
        return self.ranks.shard(batches) if self.ranks is not None else batches

    def _evaluate(self) -> Evaluation:
        """Validation loss, accuracy (%) and per-example correctness of the model as it is now."""
        reduce = self.ranks.reduce_evaluation if self.ranks is not None else None
        drill = self.config.faults.rank_drill
        if (drill is not None and drill.kind == "skew" and self.ranks is not None
                and self.ranks.rank == drill.rank and self.epoch >= drill.epoch):
            inner = reduce

            def reduce(loss_sum: torch.Tensor, count: int, correct: torch.Tensor):  # type: ignore[misc]
                return inner(loss_sum + float(count), count, correct)  # +1.0 per target on this shard

        return objective.evaluate(self.net, self._val_batches(), self.amp, reduce)

    # ================================================================== the autopilot
    def _autopilot(self, gates: dict[str, GateResult]) -> None:
        topology = self.task.topology
        names = tuple(blueprints.names(topology))
        views = []
        for sid, slot in self.host.slots.items():
            fitting: tuple[str, ...] = ()
            if slot.stage is Stage.DORMANT and slot.budget is not None:
                budget = slot.budget.for_slot(slot)
                fitting = tuple(n for n in names if blueprints.param_count(topology, n, slot.dim) <= budget)
            views.append(SlotView(sid, slot.stage, slot.blueprint, slot.epochs_in_stage,
                                  slot.metrics.accuracy_at_stage_start, fitting, gates.get(sid)))
        view = ControllerView(self.epoch, tuple(self.val_losses), tuple(self.val_accuracies), tuple(views), names,
                              planned_epochs=self.config.epochs)
        decisions = self.controller.decide(view)
        if self.controller.waiting != self._autopilot_said:
            # Said when it changes: the operator always sees why nothing happens, the log stays short.
            self._autopilot_said = self.controller.waiting
            self.emit(ev.AutopilotWaiting, reason=self.controller.waiting)
        for d in decisions:
            seed_blueprint = self.host.slots[d.slot].blueprint if d.slot in self.host.slots else None
            self.emit(ev.ControllerDecision, action=d.action, slot=d.slot, blueprint=d.blueprint or seed_blueprint,
                      reason=d.reason)
            self._decide(d)

    def _slot_report(self, slot: SeedSlot) -> ev.SlotReport:
        m = slot.metrics
        live = slot.is_live  # a fossilized seed is plain host: nothing of it is measured any more
        threshold = self.config.lifecycle.gates.ratio_threshold_for(slot.topology, slot.blueprint)
        return ev.SlotReport(
            slot=slot.slot_id,
            stage=slot.stage,
            blueprint=slot.blueprint,
            seed_id=slot.seed_id,
            epochs_in_stage=slot.epochs_in_stage,
            alpha=slot.alpha,
            grad_ratio=m.grad_ratio.value if live else None,
            grad_ratio_threshold=threshold if live else None,
            counterfactual=m.counterfactual if live else None,
            credit_low=m.credit_low if live else None,
            credit_high=m.credit_high if live else None,
            credit_method=m.credit_method if live else None,
            credit_compare=m.credit_compare if live else None,
            blending_delta=m.blending_delta if live else None,
            params=slot.seed_param_count(),
        )

    # ================================================================== governor
    def _rollback(self, trigger: str, loss: float) -> None:
        """Restore the last healthy snapshot, cull the seeds that were live, and say so."""
        if self.ranks is not None and self.leads:
            self._acts.append(Rollback(trigger, loss))  # the culls below follow from it on every rank
        self._rolling_back = True
        try:
            self._roll_back(trigger, loss)
        finally:
            self._rolling_back = False

    def _roll_back(self, trigger: str, loss: float) -> None:
        self.rollbacks_in_a_row += 1
        involved = [sid for sid, s in self.host.slots.items() if s.seed is not None and s.stage in LIVE_STAGES]
        restored_epoch = self.snapshot.epoch
        lr = self.bank.lr  # the operator may have lowered it since the snapshot, as advised: keep it
        # Restore from a copy: optimizers alias the tensors they load, and the snapshot must stay
        # pristine for the next rollback.
        self._restore(self.snapshot.detached(), keep_clock=True)
        if self.bank.lr != lr:
            self._set_lr(lr)
        culled = []
        for sid in involved:
            if self.host.slots[sid].stage in LIVE_STAGES:
                self._decide(Decision.cull(sid, "governor", f"{trigger} loss while this seed was live"))
                culled.append(sid)
        self.emit(ev.GovernorRollback, trigger=trigger, loss=loss if math.isfinite(loss) else None,
                  restored_epoch=restored_epoch, seeds_culled=culled)
        if culled:  # the culls are decisions too: the next rollback must not bring these seeds back
            self.snapshot = self._capture(copy=True)
        if self.rollbacks_in_a_row > self.config.governor.max_consecutive_rollbacks:
            raise RunDiverged(
                f"the loss blew up ({trigger}) {self.rollbacks_in_a_row} times in a row even after "
                "rolling back; lower the learning rate (set_lr) or check the data"
            )

    # ================================================================== commands
    def _set_lr(self, value: float) -> None:
        self.bank.set_lr(value)
        self.credit.set_lr(value)

    def _apply_command(self, cmd: Command) -> None:
        wire = command_to_wire(cmd)
        self.emit(ev.CommandReceived, command_id=cmd.id, command=wire)
        try:
            outcome = self._execute(cmd)
        except Exception as exc:  # a command must never take training down
            outcome = Outcome.refused(f"internal error while applying it: {type(exc).__name__}: {exc}")
        if outcome.applied:
            self.emit(ev.CommandApplied, command_id=cmd.id, command=wire)
        else:
            self.emit(ev.CommandRejected, command_id=cmd.id, command=wire, reason=outcome.reason)

    def _execute(self, cmd: Command) -> Outcome:
        """Apply one operator command: the run's clock (run control), a setting, or a structural move."""
        run = self.control.execute(cmd, self.epoch, self._in_epoch)
        if run is not None:
            return run
        match cmd:
            case AutopilotCommand(enabled=enabled):
                self.autopilot = enabled
                self._autopilot_said = None  # switched back on: say again what it waits for
                self._order(cmd)
            case SetLrCommand(value=value):
                self._set_lr(value)
                self._order(cmd)
            case _ if isinstance(cmd, MOVES):
                return self._decide(Decision.from_operator(cmd))
            case _:
                return Outcome.refused(f"unknown command {cmd.command!r}")
        return Outcome.done()

    def _decide(self, decision: Decision) -> Outcome:
        """Apply one structural decision, whoever took it (the one path to the seed bank)."""
        outcome = apply_decision(self.bank, decision, follow=not self.leads)
        if outcome.applied:
            if not self._rolling_back:
                self._order(decision)
            if decision.cause == "operator":
                self.snapshot = self._capture(copy=True)  # a rollback must not undo the operator
        return outcome

    def _order(self, act: Act) -> None:
        """The leader of a distributed run keeps what it applied, for its next orders."""
        if self.ranks is not None and self.leads:
            self._acts.append(act)

    # ================================================================== state
    def _capture(self, copy: bool) -> RunSnapshot:
        """The run as it is now; `copy` detaches it from the live tensors (an in-memory snapshot)."""
        snapshot = RunSnapshot(
            # Stopped mid-epoch, the epoch in progress is not done: a resume runs it again, so the
            # log shows each completed epoch once.
            epoch=self.epoch - 1 if self._in_epoch else self.epoch,
            step=self.step,
            seq=self.emitter.seq,  # see _save_checkpoint
            config=self.config.model_dump(mode="json"),
            model=self.host.state_dict(),
            slots={sid: s.export_state() for sid, s in self.host.slots.items()},
            bank=self.bank.state_dict(),
            credit=self.credit.state_dict(),
            controller=self.controller.state_dict(),
            autopilot=self.autopilot,
            history={"val_losses": list(self.val_losses), "val_accuracies": list(self.val_accuracies)},
            rng={"torch": torch.get_rng_state(), "data": self.data_gen.get_state()},
        )
        return snapshot.detached() if copy else snapshot

    def _restore(self, snapshot: RunSnapshot, keep_clock: bool = False) -> None:
        """Put the run back to `snapshot`. With keep_clock (a rollback) epoch/step/history move on."""
        for sid, slot_state in snapshot.slots.items():
            self.host.slots[sid].import_state(slot_state)
        self.host.load_state_dict(snapshot.model)
        self.bank.load_state_dict(snapshot.bank)
        self.credit.load_state_dict(snapshot.credit)
        if keep_clock:
            return
        self.controller.load_state_dict(snapshot.controller)
        self.autopilot = bool(snapshot.autopilot)
        self.epoch, self.step = int(snapshot.epoch), int(snapshot.step)
        self.emitter.epoch, self.emitter.step = self.epoch, self.step
        self.val_losses = [float(v) for v in snapshot.history["val_losses"]]
        self.val_accuracies = [float(v) for v in snapshot.history["val_accuracies"]]
        torch.set_rng_state(snapshot.rng["torch"])
        self.data_gen.set_state(snapshot.rng["data"])

    def _save_checkpoint(self) -> None:
        """Publish a checkpoint of the run as it is now, after the events leading to it are on disk.

        Log first: a kill between the two then leaves a log that describes at least the checkpoint.
        """
        if not self._built or not self.leads:
            return
        self.emitter.flush(fsync=True)
        snapshot = self._capture(copy=False)
        # The seq of this checkpoint's own checkpoint_saved (events are emitted from this thread
        # only, so it is the next one): a run resumed from here supersedes what came after it.
        snapshot.seq = self.emitter.seq + 1
        path = checkpoint.save(snapshot.to_state(), self.run_dir / checkpoint.CHECKPOINT_NAME)
        self.checkpoint_epoch = snapshot.epoch
        saved = self.emit(ev.CheckpointSaved, path=str(path))
        assert saved.seq == snapshot.seq, "an event slipped in between a checkpoint and its checkpoint_saved"
        self.emitter.flush(fsync=True)

    def _keep_fork_point(self) -> None:
        """Keep this epoch's checkpoint for forks (engine.fork); a failure costs a warning, not the run."""
        if not self.leads:
            return
        try:
            keep_for_forks(self.run_dir / checkpoint.CHECKPOINT_NAME, self.epoch, self.config.checkpoint_keep)
        except OSError as exc:
            self.emit(ev.WarningEvent, slot=None, code="fork_point_not_kept",
                      message=f"the checkpoint of epoch {self.epoch} could not be kept for forks "
                              f"({exc.strerror or exc}); the run goes on, its own checkpoint is intact")

    def _final_metrics(self) -> dict[str, float | None]:
        return {
            "val_loss": self.val_losses[-1] if self.val_losses else None,
            "val_accuracy": self.val_accuracies[-1] if self.val_accuracies else None,
            "epochs": float(self.epoch - 1 if self._in_epoch else self.epoch),  # completed ones
            "seeds_fossilized": float(sum(s.stage is Stage.FOSSILIZED for s in self.host.slots.values())),
        }


def _resumed_config(saved: RunSnapshot, epochs: int | None, run_dir: Path) -> RunConfig:
    """The checkpoint's config, its end moved to `epochs` when given (StartError if already past)."""
    from pydantic import ValidationError

    try:
        config = RunConfig.model_validate(saved.config)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise checkpoint.CheckpointError(
            f"{run_dir / checkpoint.CHECKPOINT_NAME} holds a config this engine cannot use "
            f"({'.'.join(map(str, first['loc']))}: {first['msg']}); start a new run instead of --resume"
        ) from None
    done = saved.epoch
    if epochs is not None:
        if epochs < done:
            raise StartError(f"cannot resume {run_dir} with --epochs {epochs}: it has already trained {done} "
                             f"epochs; give --epochs {done} or more, or leave it out to finish its "
                             f"{config.epochs} planned epochs")
        config = config.model_copy(update={"epochs": epochs})
    return config


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _engine_version() -> str:
    from engine import __version__

    return __version__
