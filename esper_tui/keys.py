"""The dashboard's keys as data: which key runs which action, how the footer, the help screen and the
command palette name it.

One table read by the dashboard (its bindings), the help screen (its rows) and the app (the command
palette), so none of them imports another to learn the keys. Plain data: no Textual, no app.
"""

from __future__ import annotations

from dataclasses import dataclass

# Textual's key names → the key as typed ("question_mark" → "?").
_KEY_NAMES = {"question_mark": "?", "slash": "/", "full_stop": ".", "equals_sign": "=", "plus": "+", "minus": "-"}


@dataclass(frozen=True, slots=True)
class Key:
    """One binding of the dashboard.

    `keys` are Textual key names, comma-separated. `action` is a Textual action string: a bare name
    is the dashboard's own (`action_<name>`), "app.<name>" is the app's (theme, help, quit, replay),
    so the screen never forwards to the app by hand. `footer`: shown in the footer (the few keys an
    operator needs most; every key is in the help screen and the command palette).
    """

    keys: str
    action: str
    description: str
    footer: bool = False

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
    Key("g", "germinate", "germinate", footer=True),
    Key("a", "advance", "advance", footer=True),
    Key("A", "force_advance", "force-advance", footer=True),
    Key("f", "fossilize", "fossilize"),
    Key("c", "cull", "cull", footer=True),
    Key("p", "pause_resume", "pause/resume", footer=True),
    Key("n", "step_epoch", "step epoch"),
    Key("o", "autopilot", "autopilot"),
    Key("w", "network", "network view"),
    Key("slash", "filter", "filter log"),
    Key("t", "app.next_theme", "theme"),
    Key("question_mark", "app.help", "help", footer=True),
    Key("q", "app.request_quit", "quit", footer=True),
    # Replay only (live runs answer with a hint): play/pause, speed, step, seek, start/end.
    Key("space", "app.replay('toggle')", "replay: play/pause"),
    Key("plus,equals_sign", "app.replay('faster')", "replay: faster"),
    Key("minus", "app.replay('slower')", "replay: slower"),
    Key("full_stop", "app.replay('step')", "replay: step one epoch"),
    Key("home", "app.replay('start')", "replay: jump to start"),
    Key("end", "app.replay('end')", "replay: jump to end"),
    Key("e", "seek", "replay: seek to epoch"),
)

REPLAY_ONLY = "replay controls work when replaying a saved log (esper-tui replay RUN_DIR)"

# The digit keys select a slot by number; one row in the help for nine bindings.
SLOT_DIGITS = range(1, 10)
SLOT_DIGITS_ROW = ("1-9", "select slot N")


def key_label(keys: str) -> str:
    """"plus,equals_sign" → "+,=": keys as typed, not by Textual's names."""
    return ",".join(_KEY_NAMES.get(k, k) for k in keys.split(","))


def help_rows() -> list[tuple[str, str]]:
    """(keys as typed, what they do) for the help screen, in the table's order, digits after j/k."""
    rows = [(key.label, key.description) for key in KEYS]
    rows.insert(2, SLOT_DIGITS_ROW)
    return rows


__all__ = ["KEYS", "REPLAY_ONLY", "SLOT_DIGITS", "SLOT_DIGITS_ROW", "Key", "help_rows", "key_label"]
