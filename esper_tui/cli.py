"""Command line of `esper-tui`: parse arguments and hand over; no logic of its own."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from esper_tui import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esper-tui",
        description="Grow neural networks while you watch and steer them.",
    )
    parser.add_argument("--version", action="version", version=f"esper-tui {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0
