"""Pure formatting helpers shared by the widgets: numbers, "—" for unmeasured, stage labels, bars.

Plain functions of their arguments (no Textual, no clock, no colours), so every rule the dashboard
shows by ("None is —, never 0"; "below threshold is the lowest block") is unit-tested here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from engine.lifecycle import Stage

DASH = "—"  # shown for any value that was not measured (None) or is not finite

STAGES: tuple[str, ...] = tuple(stage.value for stage in Stage)
# Lifecycle is data: each stage maps to one CSS class; the stylesheet colours it from the theme.
STAGE_CLASSES: dict[str, str] = {stage: f"stage-{stage}" for stage in STAGES}
UNKNOWN_STAGE_CLASS = "stage-UNKNOWN"

# Eight block heights. Below the threshold is always the lowest block, above it the other seven,
# so the threshold reads off the line even without colour.
BLOCKS = "▁▂▃▄▅▆▇█"
BAR_FULL, BAR_EMPTY = "█", "░"


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def fmt_num(x: float | int | None, digits: int = 4) -> str:
    """`x` to `digits` significant digits ("0.0523", "1.234e+05"); "—" when None or not finite."""
    if _missing(x):
        return DASH
    return f"{x:.{digits}g}"


def fmt_fixed(x: float | int | None, decimals: int = 2) -> str:
    """`x` with a fixed number of decimals ("0.65"); "—" when None or not finite."""
    if _missing(x):
        return DASH
    return f"{x:.{decimals}f}"


def fmt_int(x: float | int | None) -> str:
    """Rounded to a whole number with thousands separators ("1,234"); "—" when None."""
    if _missing(x):
        return DASH
    return f"{round(x):,}"


def fmt_pct(x: float | None, decimals: int = 1) -> str:
    """A value already in percentage points ("93.9%"); the engine logs accuracies that way."""
    if _missing(x):
        return DASH
    return f"{x:.{decimals}f}%"


def fmt_signed(x: float | None, decimals: int = 1) -> str:
    """With an explicit sign ("+1.2", "-0.4", "+0.0"); "—" when None."""
    if _missing(x):
        return DASH
    text = f"{x:+.{decimals}f}"
    return "+" + text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"


def fmt_credit(value: float | None, low: float | None, high: float | None) -> str:
    """A seed's credit with its interval: "cf +1.8 [+0.9, +2.7]"; "cf —" when unmeasured."""
    if _missing(value):
        return f"cf {DASH}"
    if _missing(low) or _missing(high):
        return f"cf {fmt_signed(value)}"
    return f"cf {fmt_signed(value)} [{fmt_signed(low)}, {fmt_signed(high)}]"


def fmt_value(x: Any) -> str:
    """A gate check's value or threshold: None "—", bools yes/no, floats 4 significant digits."""
    if x is None:
        return DASH
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return fmt_num(x, 4) if math.isfinite(x) else str(x)
    return str(x)


def stage_class(stage: str | None) -> str:
    """The CSS class for a stage ("stage-TRAINING"); unknown stages get "stage-UNKNOWN"."""
    return STAGE_CLASSES.get(str(stage), UNKNOWN_STAGE_CLASS)


def stage_badge(stage: str | None) -> str:
    """The stage written as text, so it reads without colour: "[TRAINING]"."""
    return f"[{stage or '?'}]"


def alpha_bar(alpha: float | None, width: int = 10) -> str:
    """A `width`-cell bar filled in proportion to alpha in [0, 1] (clamped); empty when None."""
    width = max(0, width)
    if _missing(alpha):
        return BAR_EMPTY * width
    filled = round(min(1.0, max(0.0, float(alpha))) * width)
    return BAR_FULL * filled + BAR_EMPTY * (width - filled)


def sparkline(
    values: Iterable[float | None], threshold: float | None = None, width: int = 20
) -> tuple[str, list[bool]]:
    """The last `width` values as block characters, and for each cell whether it is below threshold.

    None (unmeasured) is a space, never a zero. With a threshold, values below it are the lowest
    block "▁" and flagged; values at or above it scale over "▂".."█" between the threshold and the
    largest value shown. Without a threshold, values scale over all eight blocks from 0.
    """
    if width <= 0:
        return "", []
    shown = list(values)[-width:]
    measured = [float(v) for v in shown if not _missing(v)]
    if not measured:
        return " " * len(shown), [False] * len(shown)
    top = max(measured)
    chars: list[str] = []
    below: list[bool] = []
    for v in shown:
        if _missing(v):
            chars.append(" ")
            below.append(False)
            continue
        v = float(v)
        if threshold is not None and v < threshold:
            chars.append(BLOCKS[0])
            below.append(True)
            continue
        low, levels, first = (threshold, len(BLOCKS) - 1, 1) if threshold is not None else (0.0, len(BLOCKS), 0)
        span = top - low
        frac = (v - low) / span if span > 0 else (1.0 if v > low else 0.0)
        chars.append(BLOCKS[first + min(levels - 1, max(0, math.ceil(frac * levels) - 1))])
        below.append(False)
    return "".join(chars), below


def trend(values: Iterable[float | None]) -> str:
    """Values as block characters scaled between their own minimum and maximum (a shape, not a
    level: 88→91 % fills the height). None is a space; all-equal values are a flat middle line."""
    shown = list(values)
    measured = [float(v) for v in shown if not _missing(v)]
    if not measured:
        return " " * len(shown)
    low, high = min(measured), max(measured)
    out = []
    for v in shown:
        if _missing(v):
            out.append(" ")
        elif high == low:
            out.append(BLOCKS[3])
        else:
            out.append(BLOCKS[min(len(BLOCKS) - 1, int((float(v) - low) / (high - low) * len(BLOCKS)))])
    return "".join(out)
