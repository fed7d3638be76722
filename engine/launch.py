"""The engine process's command line: `python -m engine train [options]`.

Parses options into a RunConfig, runs the Trainer in RUN_DIR with plain progress lines on stdout,
and exits with its code. The dashboard starts this as its own process; `esper-tui train --headless`
hands over to it directly.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from engine.config import RunConfig
from engine.options import add_config_options, add_train_options, config_from_args, default_run_dir

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Run the esper engine: grow a network on a task.")
    sub = parser.add_subparsers(dest="verb", required=True)
    # `esper-tui train --headless` execs this process and says so, so help shows the user's command.
    prog = os.environ.get("ESPER_PROG")
    train = sub.add_parser("train", help="train a run (headless: plain progress lines)",
                           **({"prog": prog} if prog and "train" in prog else {}))
    add_train_options(train)
    # The engine is always headless; `--headless` is accepted so that a command written for
    # `esper-tui train --headless` (or torchrun's `-m engine train --headless`) works unchanged.
    train.add_argument("--headless", action="store_true", help="accepted and ignored: the engine is always headless")
    exp = sub.add_parser("experiment", help="host alone vs grown vs final network from scratch vs 2x wide, over seeds",
                         **({"prog": prog} if prog and "experiment" in prog else {}))
    add_config_options(exp)
    exp.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated random seeds (default 0,1,2,3,4)")
    exp.add_argument("--arms", default=",".join(("host", "grown", "fixed", "wide")),
                     help="which arms to run (default all: host,grown,fixed,wide)")
    exp.add_argument("--out", help="directory for the runs and report.md (default runs/experiment-<time>-<task>)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verb == "experiment":
        return experiment(args, argv)
    return train(args)


def _config_or_none(args: argparse.Namespace) -> RunConfig | None:
    """The RunConfig the options describe, or None after printing what is wrong with them."""
    try:
        return config_from_args(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        print(f"error: invalid configuration: {where}: {first['msg']}", file=sys.stderr)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
    return None


def experiment(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """`experiment`: every arm for every seed, then the report (engine.experiment)."""
    config = _config_or_none(args)
    if config is None:
        return EXIT_USAGE
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        print(f"error: --seeds wants comma-separated integers, got {args.seeds!r}", file=sys.stderr)
        return EXIT_USAGE
    arms = tuple(a.strip() for a in args.arms.split(",") if a.strip())
    from engine.experiment import ARMS, run_experiment

    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        got = f"unknown arm {', '.join(map(repr, unknown))}" if unknown else "no arm"
        print(f"error: {got}: --arms takes some of {', '.join(ARMS)}", file=sys.stderr)
        return EXIT_USAGE
    if not seeds:
        print("error: --seeds needs at least one seed", file=sys.stderr)
        return EXIT_USAGE
    from engine.rundir import StartError
    from engine.tasks import TaskDataError

    out = Path(args.out or Path("runs") / f"experiment-{time.strftime('%Y%m%d-%H%M%S')}-{config.task}")
    prog = os.environ.get("ESPER_PROG", "python -m engine experiment")
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["experiment"]:
        words = words[1:]
    try:
        path = run_experiment(config, seeds, out, arms=arms, command=" ".join([prog, *words]))
    except (TaskDataError, StartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"report: {path}", flush=True)
    return 0


def train(args: argparse.Namespace) -> int:
    config = _config_or_none(args)
    if config is None:
        return EXIT_USAGE
    if args.resume and args.overwrite:
        print("error: --resume continues a run and --overwrite replaces it: choose one", file=sys.stderr)
        return EXIT_USAGE
    if args.resume and args.run_dir and Path(args.run_dir) != Path(args.resume):
        print("error: --resume RUN_DIR already names the run directory; drop --run-dir", file=sys.stderr)
        return EXIT_USAGE
    under_torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    if under_torchrun and not (args.resume or args.run_dir):
        # Every rank must name the same directory, and a restarted job must find its own again.
        print("error: under torchrun give --run-dir (or --resume RUN_DIR): every rank and every restart "
              "must name the same run directory", file=sys.stderr)
        return EXIT_USAGE
    run_dir = Path(args.resume or args.run_dir or default_run_dir(config.task))
    # Imported here so that `--help` and option errors answer without loading torch.
    from engine.checkpoint import CHECKPOINT_NAME
    from engine.distributed import Ranks
    from engine.fork import ForkSource
    from engine.rundir import StartError
    from engine.tasks import TaskDataError
    from engine.telemetry.progress import ProgressPrinter
    from engine.trainer import Trainer

    resume, overwrite = bool(args.resume), args.overwrite
    if (args.fork is None) != (args.fork_epoch is None):
        print("error: --fork RUN_DIR and --fork-epoch N go together", file=sys.stderr)
        return EXIT_USAGE
    if args.fork is not None and (args.resume or Path(args.fork).resolve() == run_dir.resolve()):
        print("error: a fork is a new run: give it its own --run-dir (the source run is only read)", file=sys.stderr)
        return EXIT_USAGE
    forking = args.fork is not None and not (restarted and (run_dir / CHECKPOINT_NAME).exists())
    if restarted and not resume:
        # torchrun --max-restarts started this job again after a rank failed: go on from the last
        # checkpoint of the same run (or, if it failed before its first one, start that run over).
        resume = (run_dir / CHECKPOINT_NAME).exists()
        overwrite = not resume
    try:
        ranks = Ranks.from_env(config.device, config.collective_timeout_s)
    except (RuntimeError, ValueError) as exc:
        print(f"error: cannot join the torchrun process group: {exc}", file=sys.stderr)
        return EXIT_USAGE
    leads = ranks is None or ranks.is_leader
    sinks = () if args.quiet or not leads else (ProgressPrinter(sys.stdout),)
    trainer = None
    try:
        try:
            fork = ForkSource.find(args.fork, args.fork_epoch) if forking else None
            trainer = Trainer(config, run_dir, resume=resume and fork is None, overwrite=overwrite,
                              epochs=args.epochs if resume or fork else None, sinks=sinks, ranks=ranks, fork=fork)
            refused = None
        except (StartError, TaskDataError) as exc:
            refused = exc
        if ranks is not None:  # a rank that cannot start stops every rank, before any collective waits
            message = ranks.agree(str(refused) if refused is not None else None)
            if message is not None and refused is None:
                refused = StartError(message)
        if refused is not None:
            raise refused
        if not args.quiet and leads:
            print(f"run directory: {run_dir}", flush=True)
        return trainer.run()
    except (StartError, TaskDataError) as exc:  # wrong directory, checkpoint or data: one line, nothing logged
        if leads:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if ranks is not None:
            del trainer  # the DDP wrappers must be gone before the process group (DESIGN.md facts)
            ranks.close()
