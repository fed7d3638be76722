"""The engine's options: argparse definitions and how they become a RunConfig. Torch-free.

Shared by `python -m engine` (engine.launch) and the dashboard (`esper-tui train` checks the options
in its own process before it starts anything), so both parse and validate them the same way.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from engine.config import PRESETS, TASK_NAMES, OptimConfig, RunConfig


def add_train_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `python -m engine train` and `esper-tui train`."""
    add_config_options(p)
    p.add_argument("--seed", type=int, help="random seed (same seed + config = same lifecycle events on CPU)")
    p.add_argument("--no-autopilot", dest="autopilot", action="store_false", default=None,
                   help="only the operator moves seeds")
    p.add_argument("--run-dir", help="where events.jsonl, control.sock and checkpoint.pt live (default runs/<time>-<task>)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its checkpoint (its own config; --epochs moves its end)")
    p.add_argument("--fork", metavar="RUN_DIR",
                   help="start a new run (in --run-dir) from RUN_DIR's state at the end of --fork-epoch: its kept "
                        "checkpoint at or before that epoch, its config (--epochs moves the end); RUN_DIR is only read")
    p.add_argument("--fork-epoch", type=int, metavar="N", help="with --fork: the epoch to fork at")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --run-dir (its log and checkpoint are deleted)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def add_config_options(p: argparse.ArgumentParser) -> None:
    """The options that make a RunConfig (train and experiment)."""
    p.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="named configuration (default: digits on a small CNN; quick: a whole seed life in seconds; text: Transformer LM)")
    p.add_argument("--task", choices=TASK_NAMES, metavar="TASK", help=f"the built-in task: {' | '.join(TASK_NAMES)} (default: the preset's)")
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
