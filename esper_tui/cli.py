"""Command line of `esper-tui`: parse, build a source, run the app.

- `esper-tui` / `esper-tui train [--pace S] [engine options]`: check the options, start the engine as
  its own process (own session: a hang-up never kills it) in a new run directory named after the
  task (`runs/<time>-<task>`), and watch it live, paced to `--pace` seconds an epoch (0.5 unless
  told). An engine that refuses to start (missing data, a locked or occupied directory) is shown
  as a message, exit 2, and the directory made for it is removed again.
- `esper-tui train --headless [engine options]`: replace this process with the engine (plain lines).
- `esper-tui attach [RUN_DIR]`: watch a running or finished run, with its full history; without a
  path, the only live run under ./runs, or a picker of them all.
- `esper-tui runs [DIR]`: a table of the runs under DIR (./runs): task, status, epochs, best accuracy.
- `esper-tui replay RUN_DIR|events.jsonl [--speed X] [--strict]`: play a saved log back through the
  same screens; `--strict` refuses a log with any odd line instead of skipping it.
- `esper-tui experiment [options]`: replace this process with the engine's headless experiment
  (host alone / grown / final network from scratch / 2x wide, with a report).

The dashboard package never imports torch: the engine always runs in another interpreter. Its
options are checked here with the engine's own parser and config (neither loads torch).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.options import add_train_options, config_from_args
from engine.telemetry.safe_text import safe_text
from esper_tui import __version__
from esper_tui.process import engine_launcher

THEME_NAMES = ("esper-dark", "esper-light", "esper-high-contrast")
LIVE_PACE = 0.5  # seconds per epoch, live: the digits run takes ~10 s at full speed, ~40 s paced
EXIT_USAGE = 2  # the engine's code for "cannot start as asked"
EXIT_INTERRUPTED = 130
START_WAIT = 60.0  # seconds to wait for the engine's first event before opening the dashboard anyway
RUNS_DIR = Path("runs")
VERBS = ("train", "experiment", "attach", "runs", "replay", "export", "fork", "compare")
TRAIN_DESCRIPTION = (
    "Train a run and watch it live: the engine runs as its own process in a new run directory "
    "runs/<time>-<task> (or --run-dir / --resume), and the dashboard follows it. Quitting asks "
    "whether to stop the run or detach and leave it training."
)
PACE_HELP = (
    "live: make every epoch last at least SECONDS, so there is time to watch and steer (default "
    f"{LIVE_PACE}; 0 = full speed). Headless: no pacing unless given. It is the engine's "
    "--set min_epoch_seconds=SECONDS (a --set of your own wins); a resumed run keeps its own pace"
)


class OptionError(Exception):
    """An option the engine would refuse; the message is one line."""


class _RaisingParser(argparse.ArgumentParser):
    """An ArgumentParser that raises OptionError instead of printing usage and exiting."""

    def error(self, message: str) -> Any:
        raise OptionError(message)


def _pace(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 (full speed) or more seconds")
    return value


def _add_ui_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--refresh", type=float, default=4.0, metavar="HZ", help="screen refreshes per second (default 4)")
    p.add_argument("--theme", choices=THEME_NAMES, default="esper-dark")


def _nproc(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of processes") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give 1 or more processes")
    return value


def _add_live_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--pace", type=_pace, metavar="SECONDS", help=PACE_HELP)
    p.add_argument("--headless", action="store_true", help="no dashboard: the engine's plain progress lines")
    p.add_argument("--nproc-per-node", type=_nproc, default=1, metavar="N",
                   help="train under torchrun with N processes on this machine (one GPU each on CUDA, gloo on "
                        "CPU); rank 0 writes the log and takes the commands (default 1: one process, no torchrun)")


def build_parser() -> argparse.ArgumentParser:
    """The `esper-tui` parser. `train` takes the engine's options too (passed on, see `train_help`)."""
    parser = argparse.ArgumentParser(
        prog="esper-tui",
        description="Grow neural networks while you watch and steer them. With no command: train the "
                    "default task (digits) live; the options of `esper-tui train` apply.",
    )
    parser.add_argument("--version", action="version", version=f"esper-tui {__version__}")
    ui = argparse.ArgumentParser(add_help=False)
    _add_ui_options(ui)
    sub = parser.add_subparsers(dest="verb")
    train = sub.add_parser(
        "train", parents=[ui], add_help=False,
        usage="esper-tui train [--pace SECONDS] [--headless] [options] (all of them: esper-tui train --help)",
        help="train a run live (options: esper-tui train --help)",
    )
    _add_live_options(train)
    train.add_argument("-h", "--help", action="store_true")
    experiment = sub.add_parser(
        "experiment", add_help=False,
        help="does growth pay? host alone vs grown vs final network from scratch vs 2x wide, over seeds "
             "(headless; options: esper-tui experiment --help)",
    )
    experiment.add_argument("-h", "--help", action="store_true")
    attach = sub.add_parser("attach", parents=[ui], help="watch a running or finished run "
                            "(no RUN_DIR: the live run under ./runs, or choose one)")
    attach.add_argument("run_dir", type=Path, nargs="?")
    runs = sub.add_parser("runs", help="the runs under DIR (default ./runs): task, status, epochs, best accuracy")
    runs.add_argument("dir", type=Path, nargs="?", metavar="DIR")
    replay = sub.add_parser("replay", parents=[ui], help="replay a saved run log")
    replay.add_argument("log", type=Path, help="RUN_DIR or its events.jsonl")
    replay.add_argument("--speed", type=float, default=2.0, help="epochs per second (default 2; 0 = all at once)")
    replay.add_argument("--strict", action="store_true",
                        help="refuse a log with any bad line (exit 2) instead of skipping it with a warning")
    fork = sub.add_parser(
        "fork", parents=[ui], add_help=True,
        usage="esper-tui fork RUN_DIR --epoch N [--run-dir NEW] [--headless] [--epochs E] [train options]",
        help="start a new live run from RUN_DIR's state at the end of epoch N (its nearest kept checkpoint "
             "at or before N); RUN_DIR is only read",
    )
    fork.add_argument("source", type=Path, metavar="RUN_DIR")
    fork.add_argument("--epoch", type=int, required=True, metavar="N", help="the epoch to fork at")
    _add_live_options(fork)
    compare = sub.add_parser("compare", parents=[ui],
                             help="two runs side by side: val accuracy and loss overlaid, lifecycle moves by epoch "
                                  "(a fork against its source, typically)")
    compare.add_argument("run_a", type=Path, metavar="RUN_A")
    compare.add_argument("run_b", type=Path, metavar="RUN_B")
    compare.add_argument("--text", action="store_true", help="print the comparison as text instead of a screen")
    export = sub.add_parser("export", help="a run log as CSV tables: per-epoch metrics, per-slot series, stage changes")
    export.add_argument("log", type=Path, help="RUN_DIR or its events.jsonl")
    export.add_argument("--csv", type=Path, required=True, metavar="DIR",
                        help="write epochs.csv, slots.csv and moves.csv into DIR (created if missing)")
    export.add_argument("--strict", action="store_true", help="refuse a log with any bad line (exit 2)")
    replay.add_argument("--summary", action="store_true",
                        help="print a plain-text (markdown) report of the run instead of replaying it: how it "
                             "ended, accuracy, each seed's journey and why, operator commands, skipped lines")
    return parser


def train_help() -> str:
    """`esper-tui train --help`: the dashboard's own options, then the engine's."""
    p = argparse.ArgumentParser(prog="esper-tui train", description=TRAIN_DESCRIPTION, add_help=False)
    dashboard = p.add_argument_group("dashboard options")
    dashboard.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    _add_live_options(dashboard)
    _add_ui_options(dashboard)
    add_train_options(p.add_argument_group("engine options (python -m engine train)"))
    return p.format_help()


def engine_argv(options: Sequence[str], verb: str = "train", nproc: int = 1) -> list[str]:
    """The engine process's command line for `verb` (train, experiment) with these options."""
    return [*engine_launcher(nproc=nproc), verb, *options]


def main(argv: Sequence[str] | None = None) -> int:
    """Run `esper-tui` with `argv` (default: the process's arguments); the exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(_with_verb(words))
    if args.verb == "train":
        return _train(args, rest, command=shlex.join(["esper-tui", *words]))
    if args.verb == "fork":
        args.help = False
        fork_options = ["--fork", str(args.source), "--fork-epoch", str(args.epoch), *rest]
        return _train(args, fork_options, command=shlex.join(["esper-tui", *words]))
    if args.verb == "experiment":
        env = {**os.environ, "ESPER_PROG": "esper-tui experiment"}
        os.execve(sys.executable, engine_argv([*rest, *(["--help"] if args.help else [])], "experiment"), env)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.verb == "runs":
        return _runs(args.dir)
    if args.verb == "attach":
        return _attach(args.run_dir, args.refresh, args.theme)
    if args.verb == "compare":
        return _compare(args.run_a, args.run_b, args.text, args.theme)
    if args.verb == "export":
        return _export(args.log, args.csv, args.strict)
    if args.summary:
        return _summary(args.log, args.strict)
    return _replay(args.log, args.speed, args.refresh, args.theme, args.strict)


def _with_verb(words: list[str]) -> list[str]:
    """`words` with the verb first: no verb means `train`, so `esper-tui --epochs 5` is
    `esper-tui train --epochs 5` (decided before parsing: an option's value is no verb)."""
    if words and (words[0] in VERBS or words[0] in ("-h", "--help", "--version")):
        return words
    return ["train", *words]


def _train(args: argparse.Namespace, rest: list[str], command: str) -> int:
    if args.help:
        sys.stdout.write(train_help())
        return 0
    pace = ["--set", f"min_epoch_seconds={args.pace}"] if args.pace is not None else []
    nproc = args.nproc_per_node
    if args.headless:
        if nproc > 1:  # every rank, and every restart, must name one run directory: choose it here
            try:
                rest = _with_run_dir(rest)
            except OptionError as exc:
                print(f"esper-tui train: error: {exc} (esper-tui train --help lists the options)", file=sys.stderr)
                return EXIT_USAGE
        env = {**os.environ, "ESPER_PROG": "esper-tui train --headless"}
        os.execve(sys.executable, engine_argv([*pace, *rest], nproc=nproc), env)
    # Live: paced unless told otherwise, whatever the other options. First, so that a --set of the
    # user's own comes later and wins (the engine applies them in order).
    pace = pace or ["--set", f"min_epoch_seconds={LIVE_PACE}"]
    return _live(rest, pace, refresh=args.refresh, theme=args.theme, command=command, nproc=nproc)


def _with_run_dir(engine_options: list[str]) -> list[str]:
    """The options as given if they name a run directory (--run-dir, --resume), else with a fresh one
    under ./runs added. Raises OptionError, as `checked_options`, for options the engine would refuse."""
    from esper_tui.process import new_run_dir

    args, config = checked_options(engine_options)
    if args.resume or args.run_dir:
        return engine_options
    return [*engine_options, "--run-dir", str(new_run_dir(RUNS_DIR, config.task))]


# ------------------------------------------------------------------------------------------ live
def checked_options(engine_options: Sequence[str]) -> tuple[argparse.Namespace, Any]:
    """The engine options parsed, and the RunConfig they describe (the engine's own parser and
    config, engine.options), as `python -m engine train` would see them.

    Raises OptionError with the engine's one-line reason: nothing is created for options it would
    refuse. Loads no torch.
    """
    from pydantic import ValidationError

    parser = _RaisingParser(prog="esper-tui train", add_help=False)
    add_train_options(parser)
    args = parser.parse_args(list(engine_options))
    try:
        return args, config_from_args(args)
    except ValidationError as exc:  # worded as `python -m engine train` words it
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise OptionError(f"invalid configuration: {where}: {first['msg']}") from None
    except ValueError as exc:
        raise OptionError(str(exc)) from None


def _live(engine_options: list[str], pace: list[str], *, refresh: float, theme: str, command: str,
          nproc: int = 1) -> int:
    from esper_tui.process import EngineProcess, new_run_dir

    try:
        args, config = checked_options(engine_options)
    except OptionError as exc:
        print(f"esper-tui train: error: {exc} (esper-tui train --help lists the options)", file=sys.stderr)
        return EXIT_USAGE
    # `--resume D` names the run directory itself: watch D, not a fresh one. As parsed, so that
    # the directory watched is the one the engine will use (an abbreviated --run … included).
    named = args.resume or args.run_dir
    runs_existed = RUNS_DIR.is_dir()
    run_dir = Path(named) if named else new_run_dir(RUNS_DIR, config.task)
    try:
        process = EngineProcess.start(run_dir, [*pace, *_without(engine_options, "--run-dir")], new_dir=not named,
                                      nproc=nproc)
    except OSError as exc:
        print(f"esper-tui: cannot start the engine: {exc}", file=sys.stderr)
        return 1
    try:
        refused = _wait_for_start(process)
    except KeyboardInterrupt:
        _cancel(process, runs_existed)
        return EXIT_INTERRUPTED
    if refused == EXIT_USAGE:
        return _start_failed(process, command, theme, runs_existed)
    # Started, still starting after START_WAIT, or died some other way: the dashboard follows the
    # log and shows a crash (with the engine's stderr) as such.
    from esper_tui.sources import LiveSource

    return _run_app(LiveSource(run_dir, process=process), refresh, theme, run_dir)


def _wait_for_start(process: Any) -> int | None:
    """Wait for the engine's first event (torch and the data load first: seconds); its exit code if
    it refused to start, else None."""
    print(f"esper-tui: starting the engine in {process.run_dir} (Ctrl-C cancels)", file=sys.stderr, flush=True)
    return process.wait_until_logging(START_WAIT)


def _cancel(process: Any, runs_existed: bool) -> None:
    """Ctrl-C before the first event: end the engine (nothing to save yet) and tidy up after it."""
    process.terminate()
    if process.wait(timeout=5) is None:
        process.kill()
        process.wait(timeout=5)
    if not process.has_logged():
        _discard(process, runs_existed)
    print("esper-tui: cancelled before the run started", file=sys.stderr)


def _discard(process: Any, runs_existed: bool) -> bool:
    """Remove what a launch that never started left; True if its run directory went too."""
    removed = process.discard_unstarted()
    if removed and not runs_existed and process.run_dir.parent == RUNS_DIR:
        try:
            RUNS_DIR.rmdir()  # made just for this run, and empty again
        except OSError:
            pass
    return removed


def refusal_message(stderr: str) -> str:
    """The engine's reason for refusing to start: its last "error: ..." line, else its last lines."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:") or ": error: " in line:
            return line
    return "\n".join(lines[-20:])


def _start_failed(process: Any, command: str, theme: str, runs_existed: bool) -> int:
    message = refusal_message(process.stderr_tail())
    where = process.run_dir
    removed = _discard(process, runs_existed)
    note = (f"Nothing was left behind ({where} was removed)." if removed
            else f"{where} was left as it was." if not process.created_dir
            else f"{where} holds other files: kept.")
    show_start_failed(message, command, note, theme)
    # Also in the terminal's scrollback, once the screen is gone (the child's words, made safe).
    print(f"esper-tui: the run could not start; the engine said:\n{safe_text(message, multiline=True)}",
          file=sys.stderr)
    return EXIT_USAGE


def show_start_failed(message: str, command: str, note: str, theme: str) -> None:
    """The "could not start" screen, until the user presses q (only on a terminal: a script gets
    the message on stderr alone, and no screen waiting for a key nobody presses)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return
    from esper_tui.screens.standalone import StandaloneApp
    from esper_tui.screens.start_failed import StartFailedScreen

    StandaloneApp(StartFailedScreen(message, command, note), theme=theme).run()


def _run_app(source, refresh: float, theme: str, run_dir: Path | None) -> int:
    from esper_tui.app import EsperApp

    # An absolute path: the re-attach command it shows works from any directory.
    where = os.path.abspath(run_dir) if run_dir else None
    app = EsperApp(source, refresh=refresh, theme=theme, run_dir=where)
    app.run()
    if app.fork_epoch is not None and run_dir is not None:  # `F` in a replay: a live fork from there
        options = ["--fork", str(run_dir), "--fork-epoch", str(app.fork_epoch)]
        return _live(options, ["--set", f"min_epoch_seconds={LIVE_PACE}"], refresh=refresh, theme=theme,
                     command=shlex.join(["esper-tui", "fork", str(run_dir), "--epoch", str(app.fork_epoch)]))
    return app.return_code or 0


# ------------------------------------------------------------------------------------------ runs, attach
def _runs(base: Path | None) -> int:
    from esper_tui.runs import find_runs, format_runs

    where = base or RUNS_DIR
    try:
        runs = find_runs(where)
    except OSError as exc:
        if base is None and isinstance(exc, FileNotFoundError):
            runs = []  # no ./runs yet: simply no runs
        else:
            print(f"esper-tui runs: {where}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
    sys.stdout.write(format_runs(runs, where))
    return 0


def _choose_run(theme: str) -> tuple[Path | None, int]:
    """The run `esper-tui attach` without a path means: (its directory, or None and the exit code)."""
    from esper_tui.runs import find_runs, live_runs

    try:
        runs = find_runs(RUNS_DIR)
    except OSError:
        runs = []
    if not runs:
        print(f"esper-tui attach: no runs under {RUNS_DIR}/ to attach to; start one with esper-tui, "
              "or give the run directory: esper-tui attach RUN_DIR", file=sys.stderr)
        return None, EXIT_USAGE
    live = live_runs(runs)
    if len(live) == 1:
        return live[0].path, 0
    chosen = pick_run(runs, theme)
    return chosen, 0


def pick_run(runs: Sequence[Any], theme: str) -> Path | None:
    """The run picker: the chosen run's directory, or None when the user quit."""
    from esper_tui.screens.run_picker import RunPickerScreen
    from esper_tui.screens.standalone import StandaloneApp

    return StandaloneApp(RunPickerScreen(runs, str(RUNS_DIR)), theme=theme).run()


def _attach(run_dir: Path | None, refresh: float, theme: str) -> int:
    from esper_tui.runs import lock_held
    from esper_tui.sources import LiveSource

    if run_dir is None:
        run_dir, code = _choose_run(theme)
        if run_dir is None:
            return code
    # An engine still loading holds the lock before its first event: the log need not exist yet.
    if not (run_dir / "events.jsonl").exists() and not lock_held(run_dir):
        print(f"esper-tui: no run log at {run_dir}/events.jsonl; give the directory of a run", file=sys.stderr)
        return 2
    return _run_app(LiveSource(run_dir), refresh, theme, run_dir)


def _replay(log: Path, speed: float, refresh: float, theme: str, strict: bool = False) -> int:
    from esper_tui.replay import ReplaySource

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


def _read_log(log: Path, strict: bool, what: str) -> Any:
    """The log as `read_events` reads it, or None after one line on stderr saying why not."""
    from engine.telemetry.runlog import LogError, read_events

    try:
        read = read_events(log, strict=strict)
    except FileNotFoundError as exc:
        print(f"esper-tui: cannot {what} {safe_text(str(log))}: {safe_text(str(exc))}", file=sys.stderr)
        return None
    except LogError as exc:
        print(f"esper-tui: refusing to {what} (--strict): {' '.join(safe_text(str(exc)).split())}", file=sys.stderr)
        return None
    except OSError as exc:
        print(f"esper-tui: cannot read {safe_text(str(log))}: {safe_text(exc.strerror or str(exc))}", file=sys.stderr)
        return None
    if not read.events:
        found = f"{len(read.problems)} line{'s' if len(read.problems) != 1 else ''} and not one event" \
            if read.problems else "no event at all (an empty log)"
        print(f"esper-tui: {safe_text(str(log))} is not a run log: {found}", file=sys.stderr)
        return None
    return read


def _summary(log: Path, strict: bool) -> int:
    """`replay --summary`: the report on stdout; 2 (one line on stderr) for a log that cannot be read."""
    from esper_tui.summary import summarize

    read = _read_log(log, strict, "summarize")
    if read is None:
        return EXIT_USAGE
    sys.stdout.write(summarize(read, str(log)))
    return 0


def _compare(run_a: Path, run_b: Path, text: bool, theme: str) -> int:
    """`compare`: the screen on a terminal, else (or with --text) the plain comparison on stdout."""
    from esper_tui.compare import Comparison, as_text, run_name

    reads = [_read_log(path, False, "compare") for path in (run_a, run_b)]
    if any(read is None for read in reads):
        return EXIT_USAGE
    names = (run_name(run_a), run_name(run_b))
    if names[0] == names[1]:
        names = (f"A:{names[0]}", f"B:{names[1]}")
    comparison = Comparison.of(reads[0], reads[1], names)
    if text or not (sys.stdin.isatty() and sys.stdout.isatty()):
        sys.stdout.write(as_text(comparison))
        return 0
    from esper_tui.screens.compare import CompareScreen
    from esper_tui.screens.standalone import StandaloneApp

    StandaloneApp(CompareScreen(comparison), theme=theme).run()
    return 0


def _export(log: Path, out_dir: Path, strict: bool) -> int:
    """`export --csv DIR`: three tables; one line per file written, 2 for a log that cannot be read,
    1 for a directory that cannot be written."""
    from esper_tui.export import write_csv

    read = _read_log(log, strict, "export")
    if read is None:
        return EXIT_USAGE
    try:
        written = write_csv(read, out_dir)
    except OSError as exc:
        where = safe_text(str(exc.filename or out_dir))
        print(f"esper-tui: cannot write the export to {where}: {safe_text(exc.strerror or str(exc))}", file=sys.stderr)
        return 1
    for path, n in written.items():
        print(f"wrote {safe_text(str(path))} ({n} rows)")
    skipped = sum(p.skipped for p in read.problems)
    if skipped:
        print(f"esper-tui: {skipped} bad line{'s' if skipped != 1 else ''} of the log skipped "
              f"(esper-tui replay --summary {safe_text(str(log))} lists them)", file=sys.stderr)
    return 0


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
