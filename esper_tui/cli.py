"""Command line of `esper-tui`: parse, build a source, run the app. No logic of its own.

- `esper-tui` / `esper-tui train [engine options]`: start the engine as its own process (own session:
  a hang-up never kills it) in a new run directory, and watch it live.
- `esper-tui train --headless [engine options]`: replace this process with the engine (plain lines).
- `esper-tui attach RUN_DIR`: watch a running or finished run, with its full history.
- `esper-tui replay RUN_DIR|events.jsonl [--speed X] [--strict]`: play a saved log back through the
  same screens; `--strict` refuses a log with any odd line instead of skipping it.
- `esper-tui experiment [options]`: replace this process with the engine's headless experiment
  (host alone / grown / final network from scratch / 2x wide, with a report).

The dashboard package never imports torch: the engine always runs in another interpreter.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from esper_tui import __version__

THEME_NAMES = ("esper-dark", "esper-light", "esper-high-contrast")
LIVE_DEMO_PACE = 0.5  # seconds per epoch for the bare `esper-tui` demo run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esper-tui",
        description="Grow neural networks while you watch and steer them. With no command: train the "
                    "default task (digits) live.",
    )
    parser.add_argument("--version", action="version", version=f"esper-tui {__version__}")
    ui = argparse.ArgumentParser(add_help=False)
    ui.add_argument("--refresh", type=float, default=4.0, metavar="HZ", help="screen refreshes per second (default 4)")
    ui.add_argument("--theme", choices=THEME_NAMES, default="esper-dark")
    sub = parser.add_subparsers(dest="verb")
    train = sub.add_parser(
        "train", parents=[ui], add_help=False,
        help="train a run live (engine options: esper-tui train --headless --help)",
    )
    train.add_argument("--headless", action="store_true", help="no dashboard: the engine's plain progress lines")
    train.add_argument("-h", "--help", action="store_true")
    experiment = sub.add_parser(
        "experiment", add_help=False,
        help="does growth pay? host alone vs grown vs final network from scratch vs 2x wide, over seeds "
             "(headless; options: esper-tui experiment --help)",
    )
    experiment.add_argument("-h", "--help", action="store_true")
    attach = sub.add_parser("attach", parents=[ui], help="watch a running or finished run")
    attach.add_argument("run_dir", type=Path)
    replay = sub.add_parser("replay", parents=[ui], help="replay a saved run log")
    replay.add_argument("log", type=Path, help="RUN_DIR or its events.jsonl")
    replay.add_argument("--speed", type=float, default=2.0, help="epochs per second (default 2; 0 = all at once)")
    replay.add_argument("--strict", action="store_true",
                        help="refuse a log with any bad line (exit 2) instead of skipping it with a warning")
    return parser


def engine_argv(options: Sequence[str], verb: str = "train") -> list[str]:
    """The engine process's command line for `verb` (train, experiment) with these options."""
    return [sys.executable, "-m", "engine", verb, *options]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    verb = args.verb or "train"
    if verb == "train":
        headless = getattr(args, "headless", False)
        if headless or getattr(args, "help", False):
            env = {**os.environ, "ESPER_PROG": "esper-tui train --headless"}
            os.execve(sys.executable, engine_argv([*rest, *(["--help"] if args.help else [])]), env)
        return _live(rest, refresh=getattr(args, "refresh", 4.0), theme=getattr(args, "theme", "esper-dark"))
    if verb == "experiment":
        env = {**os.environ, "ESPER_PROG": "esper-tui experiment"}
        os.execve(sys.executable, engine_argv([*rest, *(["--help"] if args.help else [])], "experiment"), env)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if verb == "attach":
        return _attach(args.run_dir, args.refresh, args.theme)
    return _replay(args.log, args.speed, args.refresh, args.theme, args.strict)


def _run_app(source, refresh: float, theme: str, run_dir: Path | None) -> int:
    from esper_tui.app import EsperApp

    app = EsperApp(source, refresh=refresh, theme=theme, run_dir=str(run_dir) if run_dir else None)
    app.run()
    return app.return_code or 0


def _live(engine_options: list[str], refresh: float, theme: str) -> int:
    from esper_tui.process import EngineProcess, new_run_dir
    from esper_tui.sources import LiveSource

    # `--resume D` names the run directory itself: watch D, not a fresh one.
    run_dir = _option(engine_options, "--resume") or _option(engine_options, "--run-dir")
    run_dir = Path(run_dir) if run_dir else new_run_dir()
    options = _without(engine_options, "--run-dir")
    if not options:
        # The bare `esper-tui` is a demo to watch and steer: the digits run takes ~10 s at full speed,
        # so pace it to half a second per epoch (about 40 s in all). Any explicit option turns this off.
        options = ["--set", f"min_epoch_seconds={LIVE_DEMO_PACE}"]
    process = EngineProcess.start(run_dir, options)
    code = _run_app(LiveSource(run_dir, process=process), refresh, theme, run_dir)
    return code


def _attach(run_dir: Path, refresh: float, theme: str) -> int:
    from esper_tui.sources import LiveSource

    if not (run_dir / "events.jsonl").exists():
        print(f"esper-tui: no run log at {run_dir}/events.jsonl; give the directory of a run", file=sys.stderr)
        return 2
    return _run_app(LiveSource(run_dir), refresh, theme, run_dir)


def _replay(log: Path, speed: float, refresh: float, theme: str, strict: bool = False) -> int:
    from esper_tui.sources import ReplaySource

    try:
        source = ReplaySource(log, speed=speed, strict=strict)
    except (FileNotFoundError, ValueError) as exc:
        print(f"esper-tui: cannot replay {log}: {exc}", file=sys.stderr)
        return 2
    if strict:
        source.load()  # the verdict comes before any screen: a refused log never starts the UI
        if source.load_error is not None:
            reason = " ".join(source.load_error.split())  # one line, whatever the log held
            print(f"esper-tui: refusing to replay (--strict): {reason}", file=sys.stderr)
            return 2
    return _run_app(source, refresh, theme, log if log.is_dir() else log.parent)


def _option(options: Sequence[str], name: str) -> str | None:
    for i, item in enumerate(options):
        if item == name and i + 1 < len(options):
            return options[i + 1]
        if item.startswith(name + "="):
            return item.split("=", 1)[1]
    return None


def _without(options: Sequence[str], name: str) -> list[str]:
    out, skip = [], False
    for item in options:
        if skip:
            skip = False
            continue
        if item == name:
            skip = True
            continue
        if item.startswith(name + "="):
            continue
        out.append(item)
    return out
