"""The engine process's command line: `python -m engine train [options]`.

Parses options into a RunConfig, runs the Trainer in RUN_DIR with plain progress lines on stdout,
and exits with its code. The dashboard starts this as its own process; `esper-tui train --headless`
hands over to it directly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from engine.config import PRESETS, OptimConfig, RunConfig

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Run the esper engine: grow a network on a task.")
    sub = parser.add_subparsers(dest="verb", required=True)
    # `esper-tui train --headless` execs this process and says so, so help shows the user's command.
    prog = os.environ.get("ESPER_PROG")
    train = sub.add_parser("train", help="train a run (headless: plain progress lines)",
                           **({"prog": prog} if prog and "train" in prog else {}))
    add_train_options(train)
    exp = sub.add_parser("experiment", help="host alone vs grown vs final network from scratch vs 2x wide, over seeds",
                         **({"prog": prog} if prog and "experiment" in prog else {}))
    add_config_options(exp)
    exp.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated random seeds (default 0,1,2,3,4)")
    exp.add_argument("--arms", default=",".join(("host", "grown", "fixed", "wide")),
                     help="which arms to run (default all: host,grown,fixed,wide)")
    exp.add_argument("--out", help="directory for the runs and report.md (default runs/experiment-<time>-<task>)")
    return parser


def add_train_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `python -m engine train` and `esper-tui train`."""
    add_config_options(p)
    p.add_argument("--seed", type=int, help="random seed (same seed + config = same lifecycle events on CPU)")
    p.add_argument("--no-autopilot", dest="autopilot", action="store_false", default=None,
                   help="only the operator moves seeds")
    p.add_argument("--run-dir", help="where events.jsonl, control.sock and checkpoint.pt live (default runs/<time>-<task>)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its checkpoint (its own config; --epochs moves its end)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --run-dir (its log and checkpoint are deleted)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def add_config_options(p: argparse.ArgumentParser) -> None:
    """The options that make a RunConfig (train and experiment)."""
    p.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="named configuration (default: digits on a small CNN; quick: a whole seed life in seconds; text: Transformer LM)")
    p.add_argument("--task", help="digits | mnist5k | text | cifar10 | textfile")
    p.add_argument("--data-dir", help="directory (cifar10) or file (textfile) with the task's data")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--bf16", action="store_true", default=None, help="bf16 autocast")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the host")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field by its dotted path, e.g. --set lifecycle.alpha_curve=sigmoid "
                        "or --set faults.crash_at_epoch=3 (VALUE is JSON when it parses, else a string)")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    base = PRESETS[args.preset]()
    updates = {k: v for k, v in dict(task=args.task, data_dir=args.data_dir, epochs=args.epochs,
                                      batch_size=args.batch_size, seed=getattr(args, "seed", None),
                                      device=args.device, bf16=args.bf16, compile=args.compile,
                                      autopilot=getattr(args, "autopilot", None)).items()
               if v is not None}
    if args.lr is not None:
        updates["optim"] = OptimConfig(**{**base.optim.model_dump(), "lr": args.lr})
    data = {**base.model_dump(), **{k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in updates.items()}}
    for item in args.overrides:
        apply_override(data, item)
    return RunConfig.model_validate(data)


def apply_override(data: dict, item: str) -> None:
    """Set `a.b.c=value` inside a nested config dict; unknown keys are left for validation to refuse."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {key}: {part} is not a section")
    node[leaf] = value


def default_run_dir(task: str) -> Path:
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{task}"


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
    if unknown or not seeds or not arms:
        print(f"error: --arms takes some of {', '.join(ARMS)}; --seeds at least one seed", file=sys.stderr)
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
    run_dir = Path(args.resume or args.run_dir or default_run_dir(config.task))
    # Imported here so that `--help` and option errors answer without loading torch.
    from engine.rundir import StartError
    from engine.tasks import TaskDataError
    from engine.telemetry.progress import ProgressPrinter
    from engine.trainer import Trainer

    sinks = () if args.quiet else (ProgressPrinter(sys.stdout),)
    try:
        trainer = Trainer(config, run_dir, resume=bool(args.resume), overwrite=args.overwrite,
                          epochs=args.epochs if args.resume else None, sinks=sinks)
        if not args.quiet:
            print(f"run directory: {run_dir}", flush=True)
        return trainer.run()
    except (StartError, TaskDataError) as exc:  # wrong directory, checkpoint or data: one line, nothing logged
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
