"""The dashboard's keys as data: which key runs which action, how the footer, the help screen and the
command palette name it.

One table read by the dashboard (its bindings), the help screen (its rows) and the app (the command
palette), so none of them imports another to learn the keys. Plain data: no Textual, no app.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["any", "live", "replay"]

# Textual's key names → the key as typed ("question_mark" → "?").
_KEY_NAMES = {"question_mark": "?", "slash": "/", "full_stop": ".", "comma": ",", "equals_sign": "=", "plus": "+",
              "minus": "-"}


@dataclass(frozen=True, slots=True)
class Key:
    """One binding of the dashboard.

    `keys` are Textual key names, comma-separated. `action` is a Textual action string: a bare name
    is the dashboard's own (`action_<name>`), "app.<name>" is the app's (theme, help, quit, replay),
    so the screen never forwards to the app by hand. `footer`: shown in the footer (the few keys an
    operator needs most; every key is in the help screen and the command palette). `mode`: "live"
    keys steer an engine and are hidden (and inert) in a replay; "replay" keys drive a replay and are
    hidden in a live run; "any" keys work in both.
    """

    keys: str
    action: str
    description: str
    footer: bool = False
    mode: Mode = "any"

    @property
    def help_text(self) -> str:
        """The description as the help screen says it ("replay: step one epoch")."""
        return f"replay: {self.description}" if self.mode == "replay" else self.description

    def offered(self, replaying: bool) -> bool:
        """Whether this key works (and shows) in a replay (`replaying`) or a live run."""
        return self.mode == "any" or (self.mode == "replay") == replaying

    @property
    def label(self) -> str:
        """The keys as typed: "plus,equals_sign" → "+,="."""
        return key_label(self.keys)

    @property
    def in_palette(self) -> bool:
        """Whether the command palette lists it (moving the selection by one is no command)."""
        return not self.action.startswith("select(")


KEYS: tuple[Key, ...] = (
    Key("up,k", "select(-1)", "previous slot"),
    Key("down,j", "select(1)", "next slot"),
    Key("g", "germinate", "germinate", footer=True, mode="live"),
    Key("a", "advance", "advance", footer=True, mode="live"),
    Key("A", "force_advance", "force-advance", footer=True, mode="live"),
    Key("f", "fossilize", "fossilize", mode="live"),
    Key("c", "cull", "cull", footer=True, mode="live"),
    Key("p", "pause_resume", "pause/resume", footer=True, mode="live"),
    Key("n", "step_epoch", "step epoch", mode="live"),
    Key("o", "autopilot", "autopilot", mode="live"),
    Key("w", "network", "network view"),
    Key("slash", "filter", "filter log"),
    Key("t", "app.next_theme", "theme"),
    # Replay only: play/pause, speed, step, seek, start/end (the footer shows them in a replay).
    Key("space", "app.replay('toggle')", "play/pause", footer=True, mode="replay"),
    Key("plus,equals_sign", "app.replay('faster')", "faster", footer=True, mode="replay"),
    Key("minus", "app.replay('slower')", "slower", footer=True, mode="replay"),
    Key("full_stop", "app.replay('step')", "step epoch", footer=True, mode="replay"),
    Key("comma", "app.replay('step_event')", "step event", mode="replay"),
    Key("home", "app.replay('start')", "jump to start", mode="replay"),
    Key("end", "app.replay('end')", "jump to end", mode="replay"),
    Key("e", "seek", "seek epoch", footer=True, mode="replay"),
    Key("F", "app.fork", "fork a live run here", mode="replay"),
    Key("question_mark", "app.help", "help", footer=True),
    Key("q", "app.request_quit", "quit", footer=True),
)

# The digit keys select a slot by number; one row in the help for nine bindings.
SLOT_DIGITS = range(1, 10)
SLOT_DIGITS_ROW = ("1-9", "select slot N")


def key_label(keys: str) -> str:
    """"plus,equals_sign" → "+,=": keys as typed, not by Textual's names."""
    return ",".join(_KEY_NAMES.get(k, k) for k in keys.split(","))


def help_rows() -> list[tuple[str, str]]:
    """(keys as typed, what they do) for the help screen, in the table's order, digits after j/k."""
    rows = [(key.label, key.help_text) for key in KEYS]
    rows.insert(2, SLOT_DIGITS_ROW)
    return rows


def key_for(action: str) -> Key | None:
    """The key bound to `action` as Textual names it ("germinate", "replay"), or None."""
    return _BY_ACTION.get(action)


_BY_ACTION: dict[str, Key] = {k.action.split("(", 1)[0].removeprefix("app."): k for k in KEYS}

__all__ = ["KEYS", "key_for", "SLOT_DIGITS", "SLOT_DIGITS_ROW", "Key", "help_rows", "key_label"]
