"""Command line of `esper-tui`: parse arguments and hand over; no logic of its own.

`esper-tui train --headless …` replaces this process with the engine (`python -m engine train …`),
so the dashboard package itself never imports torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from esper_tui import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esper-tui",
        description="Grow neural networks while you watch and steer them.",
    )
    parser.add_argument("--version", action="version", version=f"esper-tui {__version__}")
    sub = parser.add_subparsers(dest="verb")
    train = sub.add_parser(
        "train",
        help="train a run; --headless prints plain progress lines (options: esper-tui train --help)",
        add_help=False,
    )
    train.add_argument("--headless", action="store_true", help="no dashboard: plain progress lines")
    train.add_argument("-h", "--help", action="store_true")
    return parser


def engine_argv(options: Sequence[str]) -> list[str]:
    """The engine process's command line for `train` with these options."""
    return [sys.executable, "-m", "engine", "train", *options]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.verb == "train":
        if args.help:
            rest = [*rest, "--help"]
        if not args.headless and not args.help:
            print("esper-tui: the live dashboard is not available yet; run `esper-tui train --headless`",
                  file=sys.stderr)
            return 2
        env = {**os.environ, "ESPER_PROG": "esper-tui train --headless"}
        os.execve(sys.executable, engine_argv(rest), env)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    parser.print_help()
    return 0
