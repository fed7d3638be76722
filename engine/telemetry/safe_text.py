"""Terminal-safe text: strings from outside (a run log, the control socket, a child's stderr) shown as text.

A string that reaches a terminal raw can act on it: ESC and the 8-bit C1 controls start sequences that
set the window title, write the clipboard (OSC 52) or clear the screen. `safe_text` writes every such
character as a visible escape (ESC as the four characters `\\x1b`), so what a log says is read, never
obeyed. Pure stdlib; knows nothing of events, files or the UI (the run log reader, the control server,
the headless printer and the dashboard all call it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

# C0 controls, DEL, C1 controls (U+0080-U+009F: 8-bit CSI, OSC, DCS ...) and lone surrogates (they
# cannot be encoded, so writing one to a terminal raises). The multi-line set keeps tab and newline.
_UNSAFE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_UNSAFE_MULTILINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}

# Where a JSON line can carry such a character into a decoded string: an escape (\u00XX, \b, \f, \n,
# \r, \t; JSON forbids raw C0), a raw DEL or a raw C1 character (UTF-8 \xc2\x80-\xc2\x9f). Matches
# more than that (e.g. \u00e9), never less; a match only means "decode and look".
_MAYBE_UNSAFE_JSON = re.compile(rb"\\u00[0-9a-fA-F]{2}|\\[bfnrt]|\x7f|\xc2[\x80-\x9f]")

# Fields of a run-log event that are prose over several lines (an exception's message and
# traceback, a warning's message): they keep newlines and tabs. Every other string is one line.
MULTILINE_KEYS: frozenset[str] = frozenset({"message", "traceback"})


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def safe_text(text: str, multiline: bool = False) -> str:
    """`text` with every control character written as a visible escape (ESC -> `\\x1b`, CR -> `\\r`).

    Escapes C0 controls, DEL, the C1 controls U+0080-U+009F (so no terminal escape sequence survives)
    and lone surrogates. With `multiline`, newline and tab are kept (a traceback needs them); without,
    they become `\\n` and `\\t`, so one value can never pose as several lines. Idempotent: the escapes
    are printable, so cleaning twice changes nothing. Text that needs nothing is returned as is.
    """
    pattern = _UNSAFE_MULTILINE if multiline else _UNSAFE_LINE
    if pattern.search(text) is None:
        return text
    return pattern.sub(_escape, text)


def safe_data(value: Any, multiline_keys: Iterable[str] = ()) -> Any:
    """`value` (JSON-like data) with `safe_text` applied to every string in it, dict keys included.

    Strings under a top-level key in `multiline_keys` keep newlines and tabs. Returns `value` itself
    (the same object) when nothing needed cleaning, so callers can tell by identity.
    """
    return _clean(value, frozenset(multiline_keys), top=True, multiline=False)


def _clean(value: Any, multiline_keys: frozenset[str], *, top: bool, multiline: bool) -> Any:
    if isinstance(value, str):
        return safe_text(value, multiline)
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        changed = False
        for key, item in value.items():
            new_key = safe_text(key) if isinstance(key, str) else key
            keep_lines = multiline or (top and key in multiline_keys)
            new_item = _clean(item, multiline_keys, top=False, multiline=keep_lines)
            changed = changed or new_key is not key or new_item is not item
            out[new_key] = new_item
        return out if changed else value
    if isinstance(value, (list, tuple)):
        items = [_clean(item, multiline_keys, top=False, multiline=multiline) for item in value]
        if all(new is old for new, old in zip(items, value)):
            return value
        return type(value)(items)
    return value


def clean_json_line(line: bytes, multiline_keys: Iterable[str] = MULTILINE_KEYS) -> bytes:
    """One JSON line with every control character in its strings escaped (see `safe_text`).

    Returns `line` itself when it cannot hold one, holds none, or is not JSON at all (its real parser
    then reports it as it would have). Otherwise the cleaned value, re-encoded as one JSON line.
    Strings under the top-level keys `multiline_keys` keep newlines and tabs.
    """
    if _MAYBE_UNSAFE_JSON.search(line) is None:
        return line
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):  # not JSON (or not UTF-8): leave the verdict to the validator
        return line
    clean = safe_data(value, multiline_keys)
    if clean is value:
        return line
    end = b"\n" if line.endswith(b"\n") else b""
    return json.dumps(clean, separators=(",", ":")).encode("ascii") + end


__all__ = ["MULTILINE_KEYS", "clean_json_line", "safe_data", "safe_text"]
