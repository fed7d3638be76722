"""Distributed runs on this machine: samples/s of 2 ranks against 1, and what one structural change costs.

Not a test. Two parts, each measured side by side in one run:

throughput  the real engine, headless (`python -m engine train`, or under `torchrun --standalone
            --nproc_per_node N`), on the default task with its default host and with a larger one
            (`--set host.width=32`: 16x the convolution work per sample), autopilot off so that
            nothing grows and every run trains the same model. Samples/s is what the run log says
            (`epoch_completed.samples_per_s`: every rank's samples over the epoch's wall time,
            validation included), the median over the epochs after the first. Rounds rotate
            the order of the configurations; the median over rounds is kept. Configurations:
            1 rank with 1 torch thread, 1 rank with N threads (the same cores, used by one process),
            N ranks with 1 thread each. Ratios are to 1 rank, 1 thread.
floor       a bare DDP loop (forward, loss, backward, step; no engine) on the same host and batches,
            1 process against N under torchrun: what DDP itself costs on this machine, the floor
            the engine's own ratio is read against.
change      one structural change under torchrun, timed on rank 0 in a worker started by this
            script: the leader's decision and its orders (one broadcast), every rank applying them,
            the checksum comparison (buffers shared, one all_gather), the DDP rebuild, and the first
            training step after it (DDP's first iteration builds its buckets) less a steady step.
            Six changes a repeat (germinate a `norm` seed and force-advance it, in each of the three
            slots; the smallest blueprint, so that every slot's budget admits it).

Usage: python bench/distributed.py [--rounds 3] [--epochs 8] [--nproc 2] [--device cpu|cuda]
                                   [--repeats 5] [--only throughput|change]

What to expect on N GPUs: see the README ("Several GPUs"). In short: the ranks all-reduce gradients
every step and meet at every `sync_every` steps and every epoch end, so scaling is good when a step's
compute dwarfs one all-reduce of the model's gradients (NVLink: tens of microseconds for these
models) and poor for a toy host; a structural change costs a few steps' time, once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOSTS: dict[str, list[str]] = {"default host": [], "host.width=32": ["--set", "host.width=32"]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="throughput rounds (each runs every configuration)")
    p.add_argument("--epochs", type=int, default=8, help="epochs per throughput run (the first is not counted)")
    p.add_argument("--nproc", type=int, default=2, help="ranks of the distributed configuration")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda: one GPU per rank)")
    p.add_argument("--repeats", type=int, default=5, help="structural-change repeats (six changes each)")
    p.add_argument("--only", choices=("throughput", "change"))
    p.add_argument("--worker", metavar="RUN_DIR", help=argparse.SUPPRESS)  # the change timing, under torchrun
    p.add_argument("--floor-worker", nargs="*", metavar="SET", help=argparse.SUPPRESS)  # the bare loop
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------ throughput
def engine_run(nproc: int, threads: int, host: list[str], args: argparse.Namespace) -> float:
    """Median samples/s of one headless run over its epochs after the first."""
    with tempfile.TemporaryDirectory(prefix="esper-bench-") as tmp:
        run_dir = Path(tmp) / "run"
        launcher = [sys.executable, "-m", "engine"] if nproc == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m", "engine"]
        cmd = [*launcher, "train", "--quiet", "--no-autopilot", "--device", args.device, "--epochs", str(args.epochs),
               "--run-dir", str(run_dir), "--set", f"threads={threads}", "--set", "checkpoint_every=0", *host]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"engine run failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
        rates = [e["samples_per_s"] for e in map(json.loads, (run_dir / "events.jsonl").read_text().splitlines())
                 if e["kind"] == "epoch_completed" and e["epoch"] > 1 and e["samples_per_s"]]
        return statistics.median(rates)


def throughput(args: argparse.Namespace) -> float:
    n = args.nproc
    configs = [("1 rank, 1 thread", 1, 1), (f"1 rank, {n} threads", 1, n), (f"{n} ranks, 1 thread each", n, 1)]
    worst = float("inf")
    for host_name, host in HOSTS.items():
        rates: dict[str, list[float]] = {name: [] for name, _, _ in configs}
        for r in range(args.rounds):
            order = configs[r % len(configs):] + configs[: r % len(configs)]
            for name, nproc, threads in order:
                rates[name].append(engine_run(nproc, threads, host, args))
        base = statistics.median(rates[configs[0][0]])
        print(f"\nthroughput, {host_name} (digits, batch 64 per rank, {args.epochs - 1} epochs x {args.rounds} rounds):")
        for name, _, _ in configs:
            median = statistics.median(rates[name])
            print(f"  {name:<24} {median:>9,.0f} samples/s   ratio {median / base:.2f}")
        ranks_ratio = statistics.median(rates[configs[2][0]]) / base
        worst = min(worst, ranks_ratio)
        floors = [floor_run(n, host, args) / floor_run(1, host, args) for _ in range(args.rounds)]
        print(f"  {n} ranks vs 1: {ranks_ratio:.2f}x (a bare DDP loop on this machine, no engine: "
              f"{statistics.median(floors):.2f}x)")
    return worst


# ------------------------------------------------------------------------------------------ the floor
def floor_worker(sets: list[str], args: argparse.Namespace) -> None:
    """A bare training loop of the engine's host (DDP when under torchrun): rank 0 prints samples/s."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from engine.config import RunConfig
    from engine.seedbank import make_optimizer
    from engine.tasks import load_task
    from engine.trainer import build_host

    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if args.device.startswith("cuda") \
        else torch.device("cpu")
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    host_overrides = {k.split(".", 1)[1]: int(v) for k, v in (s.split("=") for s in sets)}
    config = RunConfig(host=host_overrides)
    task = load_task(config.task)
    torch.manual_seed(0)
    host = build_host(task, config).to(device)
    model = torch.nn.parallel.DistributedDataParallel(host, init_sync=False) if world > 1 else host
    opt = make_optimizer(host.parameters(), config.optim, config.optim.lr)  # the engine's kind and settings
    batches = list(task.batches("train", config.batch_size, torch.Generator().manual_seed(0), device))[:20]
    times = []
    for _ in range(15):
        started = time.perf_counter()
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - started) / len(batches))
    if int(os.environ.get("RANK", "0")) == 0:
        print(config.batch_size * world / statistics.median(times[3:]))
    if world > 1:
        dist.destroy_process_group()


def floor_run(nproc: int, host: list[str], args: argparse.Namespace) -> float:
    sets = [host[i + 1] for i in range(0, len(host), 2)]
    launcher = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    cmd = [*launcher, str(Path(__file__).resolve()), "--device", args.device, "--floor-worker", *sets]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the bare DDP loop failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ one change
def worker(run_dir: str, args: argparse.Namespace) -> None:
    """Under torchrun: time structural changes on every rank; rank 0 prints the medians."""
    import torch
    import torch.distributed as dist

    from engine.commands import ForceAdvanceCommand
    from engine.config import RunConfig
    from engine.decisions import Decision
    from engine.distributed import Ranks
    from engine.trainer import Trainer

    ranks = Ranks.from_env(args.device)
    assert ranks is not None, "the worker runs under torchrun"
    config = RunConfig(device=args.device, autopilot=False, threads=1, checkpoint_every=0)
    phases: dict[str, list[float]] = {"orders + apply + checksums": [], "DDP rebuild": [], "first step extra": []}
    steady: list[float] = []

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    for repeat in range(args.repeats + 1):  # the first repeat warms up, not counted
        trainer = Trainer(config, Path(run_dir) / f"r{repeat}", overwrite=True, serve_commands=False, ranks=ranks)
        trainer._build()
        trainer._verify("start")
        x, y = next(iter(ranks.shard(trainer._batches("train"), 1)))
        trainer._rewrap()
        for _ in range(8):  # steady steps of the model as it is (the first builds DDP's buckets)
            sync()
            t = time.perf_counter()
            trainer._step(x, y, measure=False, grad_rows=[])
            sync()
            steady.append(time.perf_counter() - t)
        step = statistics.median(steady[-5:])
        for slot in trainer.host.slots:
            for decision in (Decision.germinate(slot, "norm", "operator"),
                             Decision.from_operator(ForceAdvanceCommand(slot=slot))):
                dist.barrier()
                t0 = time.perf_counter()
                if ranks.is_leader:
                    outcome = trainer._decide(decision)
                    assert outcome.applied, outcome.reason
                    trainer._send()
                else:
                    trainer._sync(drain=False)
                t1 = time.perf_counter()
                trainer._rewrap()
                t2 = time.perf_counter()
                sync()
                trainer._step(x, y, measure=False, grad_rows=[])
                sync()
                t3 = time.perf_counter()
                if repeat:
                    phases["orders + apply + checksums"].append(t1 - t0)
                    phases["DDP rebuild"].append(t2 - t1)
                    phases["first step extra"].append(max(0.0, (t3 - t2) - step))
        trainer._drop_wrappers()
        if trainer.writer is not None:
            trainer.writer.close()
        if trainer.claim is not None:
            trainer.claim.release()
    if ranks.is_leader:
        step = statistics.median(steady)
        total = sum(statistics.median(v) for v in phases.values())
        print(f"one structural change, {ranks.world_size} ranks ({ranks.backend}), default host, "
              f"{args.repeats} repeats x 6 changes (medians):")
        for name, values in phases.items():
            print(f"  {name:<28} {1000 * statistics.median(values):8.2f} ms")
        print(f"  {'total':<28} {1000 * total:8.2f} ms  = {total / step:.1f} steady steps of {1000 * step:.2f} ms")
        print(f"change ms: {1000 * total:.2f}")
    del trainer
    ranks.close()


def change(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="esper-bench-") as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc),
               str(Path(__file__).resolve()), "--worker", tmp, "--device", args.device, "--repeats", str(args.repeats)]
        done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the change timing failed:\n{done.stderr[-3000:]}")
        print("\n" + done.stdout.strip())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.floor_worker is not None:
        floor_worker(args.floor_worker, args)
        return
    if args.worker:
        worker(args.worker, args)
        return
    print(f"bench/distributed.py: {os.cpu_count()} cores, device {args.device}, {args.nproc} ranks")
    worst = None
    if args.only in (None, "change"):
        change(args)
    if args.only in (None, "throughput"):
        worst = throughput(args)
    if worst is not None:
        print(f"\n{args.nproc} ranks vs 1 (worst host): {worst:.2f}x")


if __name__ == "__main__":
    main()
