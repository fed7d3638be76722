"""What the lifecycle machinery costs per training step: our Trainer against a plain PyTorch loop.

Not a test. On the default CNN task (digits) it builds one host with a seed grafted into `block1`,
puts the seed in TRAINING (STE), BLENDING or FOSSILIZED, and times, side by side in one run:

  ours   the real `Trainer._train_epoch` (one optimizer, a param group per live seed, gradient statistics every
         `grad_stats_every` steps, one device read-back every `sync_every` steps, `step_metrics`
         events to the run log on disk, the governor judging, slots stepping their alpha ramps);
  plain  a deep copy of the very same module tree (same stage, so the same forward maths) trained by
         one optimizer over all its parameters, built by the engine's own `make_optimizer` (same kind,
         same fused implementation, the run's lr and weight decay):
         forward, cross-entropy, zero_grad, backward, step, and nothing else.

Both see the same batches (a fresh generator with the same seed each round), with the same number of
torch threads. BLENDING is timed twice: as the lifecycle machinery alone (credit estimated at epoch
end by `ablation_bn`, nothing per step), and as `BLENDING+twin` with the default credit estimator,
`shadow_twin`, which by design trains a seedless copy of the host on the same batches: one more host
step per step (README, "credit"). That row is the price of a true credit, shown beside the others;
the 1.05 target and `worst ratio` are the machinery's (TRAINING, BLENDING, FOSSILIZED). Rounds alternate plain/ours (and swap which goes first every round); the median time
per step of each is kept; ratio = ours / plain. The target is ≤ 1.05 for every stage. The last line
reads `worst ratio: X`. BLENDING's alpha ramps during the timing (as in a run); no stage changes.
On CUDA the clock is read after `torch.cuda.synchronize()`; the CPU-time column is CPU only.

Usage: python bench/engine_overhead.py [--rounds 21] [--epochs-per-round 2] [--width W]
                                       [--device auto|cpu|cuda] [--threads 1] [--profile]
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.config import CreditConfig, RunConfig
from engine.lifecycle import Stage
from engine.seedbank import make_optimizer
from engine.trainer import Trainer

STAGES: tuple[Stage, ...] = (Stage.TRAINING, Stage.BLENDING, Stage.FOSSILIZED)
MACHINERY_CREDIT = "ablation_bn"  # measures at epoch end only: a step is the machinery alone
TWIN_CREDIT = "shadow_twin"  # the default: a seedless twin stepped with every step while on trial
SLOT = "block1"
DATA_SEED = 1234
TARGET = 1.05


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=21, help="timed rounds (after one warm-up round)")
    p.add_argument("--epochs-per-round", type=int, default=2, help="training epochs per side per round")
    p.add_argument("--width", type=int, default=None, help="host width (default: the task's)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for both sides (0 = torch's default). 1 by default: the digits host "
                        "gains nothing from intra-op threads, and on a busy 2-core machine a second thread "
                        "makes step times swing tenfold")
    p.add_argument("--blueprint", default="conv_light", help="seed blueprint grafted into block1")
    p.add_argument("--stages", default=",".join(str(s) for s in STAGES), help="comma-separated stages")
    p.add_argument("--profile", action="store_true", help="after timing, cProfile a few epochs of ours")
    return p.parse_args(argv)


def make_trainer(args: argparse.Namespace, run_dir: Path, stage: Stage, credit: str = MACHINERY_CREDIT) -> Trainer:
    """A built Trainer (autopilot off, no command server, credit by `credit`) whose block1 seed sits
    in `stage`."""
    host = {"width": args.width} if args.width is not None else {}
    config = RunConfig(task="digits", device=args.device, autopilot=False, host=host, epochs=10_000,
                       credit=CreditConfig(method=credit))
    trainer = Trainer(config, run_dir=run_dir, serve_commands=False)
    trainer._build()
    bank = trainer.bank
    result = bank.germinate(SLOT, args.blueprint, "operator")
    if not result.passed:
        raise SystemExit(f"G0 refused {args.blueprint} in {SLOT}: {result.reason}")
    slot = trainer.host.slots[SLOT]
    while slot.stage is not stage:
        if slot.stage is Stage.FOSSILIZED:
            raise SystemExit(f"cannot reach {stage} on the happy path")
        moved = bank.advance(SLOT, True, "operator")
        if not moved.applied:
            raise SystemExit(f"could not force {SLOT} past {slot.stage}: {moved.reason}")
    return trainer


class Side:
    """One contestant: `run_epochs(n)` trains n epochs and returns (seconds, steps)."""

    def __init__(self, name: str, epoch: Callable[[torch.Generator], int], device: torch.device) -> None:
        self.name = name
        self._epoch = epoch
        self._sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.per_step: list[float] = []  # wall-clock seconds per step, one per round
        self.cpu_per_step: list[float] = []  # process CPU seconds per step, one per round

    def run_epochs(self, n: int) -> tuple[float, float, int]:
        """Train n epochs: (wall seconds, process CPU seconds, steps)."""
        gen = torch.Generator().manual_seed(DATA_SEED)  # same data order for both sides, every round
        self._sync()
        cpu, start = time.process_time(), time.perf_counter()
        steps = sum(self._epoch(gen) for _ in range(n))
        self._sync()
        return time.perf_counter() - start, time.process_time() - cpu, steps


def plain_side(trainer: Trainer) -> Side:
    """A deep copy of the staged host trained by a bare loop: one AdamW, no lifecycle machinery."""
    model = copy.deepcopy(trainer.host)
    optim = trainer.config.optim  # the run's own hyperparameters (AdamW's default weight decay is not 0)
    if optim.name != "adamw":
        raise SystemExit(f"this benchmark compares against AdamW; the config asks for {optim.name}")
    # The same optimizer implementation the engine uses (fused), over all parameters at once.
    opt = make_optimizer(model.parameters(), optim, optim.lr)
    task, batch_size, device = trainer.task, trainer.config.batch_size, trainer.device

    def epoch(gen: torch.Generator) -> int:
        model.train()
        steps = 0
        for x, y in task.batches("train", batch_size, gen, device):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
        return steps

    return Side("plain", epoch, device)


def our_side(trainer: Trainer) -> Side:
    """The real training loop of the engine, one `_train_epoch` per epoch (no epoch-end work)."""

    def epoch(gen: torch.Generator) -> int:
        trainer.data_gen = gen
        before = trainer.step
        _, _, healthy, _ = trainer._train_epoch()
        if not healthy:
            raise SystemExit("the governor rolled back during the benchmark; timings would be meaningless")
        return trainer.step - before

    return Side("ours", epoch, trainer.device)


def measure(trainer: Trainer, args: argparse.Namespace) -> tuple[Side, Side]:
    plain, ours = plain_side(trainer), our_side(trainer)
    stage = trainer.host.slots[SLOT].stage
    for side in (plain, ours):  # warm-up round: allocator, caches, optimizer state
        side.run_epochs(args.epochs_per_round)
    for r in range(args.rounds):
        order = (plain, ours) if r % 2 == 0 else (ours, plain)
        for side in order:
            seconds, cpu, steps = side.run_epochs(args.epochs_per_round)
            side.per_step.append(seconds / steps)
            side.cpu_per_step.append(cpu / steps)
    if trainer.host.slots[SLOT].stage is not stage:
        raise SystemExit(f"{SLOT} left {stage} during timing; the comparison would be unfair")
    return plain, ours


def profile_ours(trainer: Trainer, epochs: int) -> str:
    """cProfile of `epochs` epochs of ours: the top functions by own time, per step."""
    side = our_side(trainer)
    prof = cProfile.Profile()
    prof.enable()
    _, _, steps = side.run_epochs(epochs)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(35)
    return f"cProfile of ours over {steps} steps (divide times by {steps} for per step):\n{out.getvalue()}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # pinned: both sides run with exactly this many
    stages = [Stage(s.strip().upper()) for s in args.stages.split(",") if s.strip()]
    # (label, stage, credit estimator): the machinery alone, and BLENDING once more with its twin.
    runs = [(str(st), st, MACHINERY_CREDIT) for st in stages]
    if Stage.BLENDING in stages:
        runs.insert(runs.index(("BLENDING", Stage.BLENDING, MACHINERY_CREDIT)) + 1,
                    ("BLENDING+twin", Stage.BLENDING, TWIN_CREDIT))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, stage, credit in runs:
            trainer = make_trainer(args, Path(tmp) / label, stage, credit)
            try:
                if not rows:
                    print(f"device {trainer.device}, {threads} torch threads, task {trainer.task.name}, "
                          f"host {dict(trainer.task.host_kwargs, **trainer.config.host)}, seed "
                          f"{args.blueprint} in {SLOT}, batch {trainer.config.batch_size}, "
                          f"{trainer.steps_per_epoch} steps/epoch, grad stats every "
                          f"{trainer.config.grad_stats_every}, sync every {trainer.config.sync_every}; "
                          f"{args.rounds} rounds x {args.epochs_per_round} epochs per side",
                          flush=True)
                plain, ours = measure(trainer, args)
                p_ms = 1e3 * statistics.median(plain.per_step)
                o_ms = 1e3 * statistics.median(ours.per_step)
                paired = statistics.median(o / p for o, p in zip(ours.per_step, plain.per_step))
                cpu = (statistics.median(ours.cpu_per_step) / statistics.median(plain.cpu_per_step)
                       if trainer.device.type == "cpu" else float("nan"))
                rows.append((label, p_ms, o_ms, o_ms / p_ms, paired, cpu))
                print(f"  {label}: plain {p_ms:.3f} ms/step, ours {o_ms:.3f} ms/step "
                      f"(rounds: plain {' '.join(f'{1e3 * t:.3f}' for t in plain.per_step)}; "
                      f"ours {' '.join(f'{1e3 * t:.3f}' for t in ours.per_step)})", flush=True)
                if args.profile:
                    print(profile_ours(trainer, args.epochs_per_round), flush=True)
            finally:
                trainer.writer.close()
    print()
    print(f"{'stage':<14} {'plain ms/step':>14} {'ours ms/step':>13} {'ratio':>7} {'paired':>7} {'cpu':>7}")
    for label, p_ms, o_ms, ratio, paired, cpu in rows:
        twin = label.endswith("+twin")
        flag = "  (twin: a second host step each step, by design)" if twin else ("" if ratio <= TARGET else f"  > {TARGET}")
        print(f"{label:<14} {p_ms:>14.3f} {o_ms:>13.3f} {ratio:>7.3f} {paired:>7.3f} {cpu:>7.3f}{flag}")
    print("(ratio = median ours / median plain, wall clock; paired = median of the per-round ratios; "
          "cpu = the ratio of process CPU time per step, steadier on a busy machine; the machinery's "
          f"target is ≤ {TARGET})")
    print(f"worst ratio: {max(r[3] for r in rows if not r[0].endswith('+twin')):.3f}")


if __name__ == "__main__":
    sys.exit(main())
