"""The event log panel: the reducer's log lines, newest at the bottom, coloured by category, filterable.

Filtering, folding and wording are plain functions over `LogLine`s: a filter is words (a substring)
and `kind:NAME` terms (categories); a run of checkpoint lines folds into one row that grows. The
widget appends the rows new since the last call and redraws only the tail that changed (a growing
fold), so a long log never costs a full rewrite per epoch.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.content import Content
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from engine.lifecycle import Stage
from engine.telemetry.describe import CATEGORIES, checkpoint_words
from esper_tui.state import LOG_LINES, LogLine, RunState

# Kinds whose consecutive lines fold into one row that grows.
FOLDING_KINDS = frozenset({"checkpoint_saved"})
# Other names an operator may type after "kind:", besides any unambiguous start of a category.
KIND_ALIASES = {"stage": "lifecycle", "stages": "lifecycle", "seed": "lifecycle", "seeds": "lifecycle",
                "gate": "gates", "command": "operator", "commands": "operator", "error": "warnings",
                "errors": "warnings", "problems": "warnings", "ckpt": "checkpoints"}
# Category → theme variable of its colour (None: the panel's own). Stage changes take their stage's
# colour; warning and error lines the theme's warning and error colours, whatever their category.
CATEGORY_VARIABLES = {
    "run": None, "lifecycle": None, "gates": None, "operator": "accent", "autopilot": None,
    "governor": "error", "warnings": "warning", "checkpoints": "text-muted", "metrics": "text-muted",
}
LEVEL_VARIABLES = {"warning": "warning", "error": "error"}


# ---------------------------------------------------------------------------------------- filter
@dataclass(frozen=True, slots=True)
class LogFilter:
    """What the operator typed after `/`: `words` to find (any case), categories to show only
    (`kinds`, empty: all) or to hide (`hidden`, from "-kind:NAME"); `unknown` lists names that are no
    category (they match nothing, and the title says so)."""

    words: str = ""
    kinds: frozenset[str] = frozenset()
    hidden: frozenset[str] = frozenset()
    unknown: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.words or self.kinds or self.hidden or self.unknown)


def category_named(name: str) -> str | None:
    """The category an operator means by `name`: its name, an alias, or an unambiguous start ("op")."""
    name = name.lower().strip()
    if name in CATEGORIES:
        return name
    if name in KIND_ALIASES:
        return KIND_ALIASES[name]
    starts = [c for c in CATEGORIES if c.startswith(name)] if name else []
    return starts[0] if len(starts) == 1 else None


def parse_filter(text: str) -> LogFilter:
    """Parse "kind:gates block2" (only gate lines that mention block2), "-kind:checkpoints" (all but
    checkpoints), "kind:operator,autopilot" (either); every other word is part of the text to find."""
    words: list[str] = []
    kinds: set[str] = set()
    hidden: set[str] = set()
    unknown: list[str] = []
    for token in text.split():
        lowered = token.lower()
        negate = lowered.startswith("-kind:")
        if not (negate or lowered.startswith("kind:")):
            words.append(token)
            continue
        for name in lowered.split(":", 1)[1].split(","):
            if not name:
                continue
            category = category_named(name)
            if category is None:
                unknown.append(name)
            else:
                (hidden if negate else kinds).add(category)
    return LogFilter(" ".join(words), frozenset(kinds), frozenset(hidden), tuple(unknown))


def in_category(line: LogLine, category: str) -> bool:
    """Whether a line belongs to a category. A gate's verdict is about gates whatever else the line is
    about: a stage change a gate decided, or a command a failing gate refused, is found under gates."""
    return line.category == category or (category == "gates" and line.gate is not None)


def line_matches(line: LogLine, wanted: LogFilter | str) -> bool:
    """Whether a line passes a filter (or plain text: a case-insensitive substring of its slot, kind
    or text); an empty filter passes every line."""
    flt = parse_filter(wanted) if isinstance(wanted, str) else wanted
    if flt.unknown and not flt.kinds:
        return False  # "kind:nonsense" shows nothing rather than everything: the title says why
    if flt.kinds and not any(in_category(line, c) for c in flt.kinds):
        return False
    if any(in_category(line, c) for c in flt.hidden):
        return False
    if not flt.words:
        return True
    needle = flt.words.lower()
    return any(needle in f.lower() for f in (line.slot or "", line.kind, line.text))


def filter_title(text: str, flt: LogFilter) -> str:
    """The panel's title under a filter: what was typed."""
    return f"events (filter: {text})" if not flt.empty else "events"


def nothing_shown(flt: LogFilter) -> str:
    """What the panel says when no line passes the filter: why, and what would."""
    if flt.unknown:
        return f"no kind {', '.join(flt.unknown)}; the kinds are: {' '.join(CATEGORIES[:-1])}"
    return "no line matches this filter yet (/ to change it)"


# ---------------------------------------------------------------------------------------- rows
@dataclass(slots=True)
class Row:
    """One row of the panel: a log line, or a run of checkpoint lines folded together."""

    lines: list[LogLine] = field(default_factory=list)

    @property
    def last(self) -> LogLine:
        return self.lines[-1]

    @property
    def kind(self) -> str:
        return self.last.kind


def lines_after(log: Iterable[LogLine], last_n: int) -> list[LogLine]:
    """The lines numbered above `last_n`, oldest first (walks back from the newest only)."""
    newer: list[LogLine] = []
    for line in reversed(log):  # type: ignore[call-overload]
        if line.n <= last_n:
            break
        newer.append(line)
    newer.reverse()
    return newer


def fold_into(rows: list[Row], line: LogLine) -> int:
    """Add `line` to `rows`, folding it into the last row when both are of a folding kind (a run of
    checkpoints); returns the index of the first row that changed."""
    if line.kind in FOLDING_KINDS and rows and rows[-1].kind == line.kind:
        rows[-1].lines.append(line)
    else:
        rows.append(Row([line]))
    return len(rows) - 1


def line_prefix(line: LogLine) -> str:
    """"e12 #345" (epoch and seq) for an event's line; "" for a line about the log itself."""
    return "" if line.seq is None else f"e{line.epoch} #{line.seq}"


def row_words(row: Row) -> str:
    """What a row says: its line's words, or a fold's summary ("checkpoints saved at epochs 5, 10")."""
    if len(row.lines) == 1:
        return row.last.text
    epochs = list(dict.fromkeys(line.epoch for line in row.lines))  # a stop may save twice in an epoch
    return checkpoint_words(epochs)


def format_line(line: LogLine | Row) -> str:
    """"e12 #345 block1: TRAINING -> BLENDING (G2 passed)", or "line 4 skipped: …" (no prefix)."""
    row = line if isinstance(line, Row) else Row([line])
    prefix = line_prefix(row.last)
    words = row_words(row)
    return f"{prefix} {words}" if prefix else words


def style_variable(line: LogLine) -> str | None:
    """The theme variable that colours a line: its stage's for a stage change or germination, else its
    level's (warning, error), else its category's; None for the panel's own colour."""
    if line.stage is not None and line.category == "lifecycle":
        return f"stage-{line.stage.lower()}"
    return LEVEL_VARIABLES.get(line.level) or CATEGORY_VARIABLES.get(line.category)


def is_bold(line: LogLine) -> bool:
    """Stage changes stand out (bold), and so do errors and the run's start and end."""
    return line.kind in ("stage_changed", "run_started", "run_finished", "run_failed") or line.level == "error"


# ---------------------------------------------------------------------------------------- widgets
class LogLines(ScrollView, can_focus=False):
    """Styled lines wrapped at the panel's width, where the last rows can be replaced without
    rewrapping the others (a growing fold). Follows the newest row unless scrolled up."""

    DEFAULT_CSS = """
    LogLines { height: 1fr; overflow-x: hidden; overflow-y: scroll; }
    """

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._texts: list[Text] = []
        self._wrapped: list[list[Strip]] = []
        self._starts: list[int] = []  # the first screen line of each row
        self._height = 0
        self._wrap_width = 0
        # Following the newest row until the operator scrolls up. A flag, not "is the view at the
        # end now": rows can arrive again before a requested scroll to the end has happened.
        self._follow = True

    @property
    def row_count(self) -> int:
        return len(self._texts)

    def replace_from(self, index: int, texts: list[Text]) -> None:
        """Keep the rows before `index`, then these `texts` in place of the rest."""
        following = self._at_end()
        del self._texts[index:], self._wrapped[index:], self._starts[index:]
        self._height = self._starts[-1] + len(self._wrapped[-1]) if self._wrapped else 0
        width = self._width()
        for text in texts:
            self._texts.append(text)
            self._wrapped.append(self._wrap(text, width))
            self._starts.append(self._height)
            self._height += len(self._wrapped[-1])
        self._resized(following)

    def drop_front(self, count: int) -> None:
        """Forget the oldest `count` rows (the panel keeps a bounded number)."""
        if count <= 0:
            return
        following = self._at_end()
        del self._texts[:count], self._wrapped[:count]
        self._restart()
        self._resized(following)

    def rewrap(self) -> None:
        """Wrap every row again (the width or the styles changed)."""
        following = self._at_end()
        width = self._width()
        self._wrapped = [self._wrap(text, width) for text in self._texts]
        self._restart()
        self._resized(following)

    def on_resize(self) -> None:
        if self._width() != self._wrap_width:
            self.rewrap()

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        index = self.scroll_offset.y + y
        if index >= self._height or not self._starts:
            return Strip.blank(width, self.rich_style)
        row = bisect_right(self._starts, index) - 1
        strip = self._wrapped[row][index - self._starts[row]]
        if strip.cell_length != width:  # wrapped for another width (a resize is on its way): fit it
            strip = strip.crop_extend(0, width, self.rich_style)
        return strip

    def _width(self) -> int:
        return self.scrollable_content_region.width

    def _wrap(self, text: Text, width: int) -> list[Strip]:
        self._wrap_width = width
        if width <= 0:
            return []  # not laid out yet: wrapped on the first resize
        console = self.app.console
        lines = Segment.split_lines(console.render(text, console.options.update_width(width)))
        # Fitted to the width and on the panel's style once, here: a frame only picks the strips.
        style = self.rich_style
        return [strip.crop_extend(0, width, style).apply_style(style) for strip in Strip.from_lines(list(lines))] \
            or [Strip.blank(width, style)]

    def _restart(self) -> None:
        self._starts, self._height = [], 0
        for strips in self._wrapped:
            self._starts.append(self._height)
            self._height += len(strips)

    def _at_end(self) -> bool:
        return self._follow

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value < old_value:  # moved up: by the operator (following only ever scrolls down)
            self._follow = new_value >= self.max_scroll_y
        elif new_value >= self.max_scroll_y:
            self._follow = True  # back at the end: follow again

    def _resized(self, following: bool) -> None:
        size = Size(self._wrap_width, self._height)
        if size != self.virtual_size:
            # The scrollbars never come or go (overflow-y: scroll, overflow-x: hidden), so a longer log
            # moves nothing around it: set the size without the whole-screen relayout the reactive
            # `virtual_size` asks for (one per new line was the dashboard's largest cost at 4 Hz), and
            # update the scrollbar's range here, as a ScrollView's own resize does.
            self.set_reactive(LogLines.virtual_size, size)
            self._scroll_update(size)
        if following:
            self.scroll_end(animate=False, immediate=False, x_axis=False)
        self.refresh()


class EventLog(Widget):
    """A bounded, filterable log of rows. `set_filter(text)` takes words and `kind:NAME` terms."""

    DEFAULT_CSS = """
    EventLog { height: 1fr; }
    """

    def __init__(self, *, max_lines: int = LOG_LINES, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.border_title = "events"  # the subtitle is the screen's (commands on their way)
        self.max_lines = max_lines
        self._filter_text = ""
        self._filter = LogFilter()
        self._state: RunState | None = None
        self._last_n = 0
        self._rows: list[Row] = []
        self._styles: dict[str | None, Style] = {}
        self._view: LogLines | None = None

    def compose(self) -> ComposeResult:
        yield LogLines()

    def on_mount(self) -> None:
        self._view = self.query_one(LogLines)
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._restyle())
        self._styles = self._theme_styles()
        self._rebuild()

    @property
    def filter(self) -> str:
        """The filter as typed ("" when none)."""
        return self._filter_text

    @property
    def lines(self) -> list[str]:
        """The plain text of the rows now shown, oldest first."""
        return [format_line(row) for row in self._rows]

    def set_filter(self, text: str) -> None:
        """Show only the lines that pass `text` (see `parse_filter`); "" shows all."""
        text = text.strip()
        if text == self._filter_text:
            return
        self._filter_text, self._filter = text, parse_filter(text)
        # Content, not str: a string title is read as markup, and a typed "[/x]" would crash the app.
        self.border_title = Content(filter_title(text, self._filter))
        self._rebuild()

    def show(self, state: RunState, selected: str | None = None) -> None:
        """Add the lines new since the last call (or start over, if this is a different state)."""
        if state is not self._state or state.logged < self._last_n:
            self._state = state
            self._rebuild()
            return
        self._add(lines_after(state.log, self._last_n))

    def _rebuild(self) -> None:
        self._rows.clear()
        self._last_n = 0
        if self._view is not None:
            self._view.replace_from(0, [])
        self._add(list(self._state.log) if self._state is not None else [], rebuilt=True)

    def _restyle(self) -> None:
        self._styles = self._theme_styles()
        self._rebuild()

    def _add(self, lines: list[LogLine], rebuilt: bool = False) -> None:
        if not (lines or rebuilt):
            return
        if lines:
            self._last_n = lines[-1].n
        changed = len(self._rows)
        for line in lines:
            if line_matches(line, self._filter):
                changed = min(changed, fold_into(self._rows, line))
        if self._view is not None and changed < len(self._rows):
            self._view.replace_from(changed, [self._rich(row) for row in self._rows[changed:]])
        elif self._view is not None and not self._rows and not self._filter.empty:
            self._view.replace_from(0, [Text(nothing_shown(self._filter), style="italic")])
        overflow = len(self._rows) - self.max_lines
        if overflow > 0:
            del self._rows[:overflow]
            if self._view is not None:
                self._view.drop_front(overflow)

    def _rich(self, row: Row) -> Text:
        line = row.last
        colour = self._styles.get(style_variable(line), Style())
        text = Text(format_line(row), style=colour + Style(bold=is_bold(line)))
        text.stylize("dim", 0, len(line_prefix(line)))
        return text

    def _theme_styles(self) -> dict[str | None, Style]:
        variables = self.app.theme_variables
        wanted = {*CATEGORY_VARIABLES.values(), *LEVEL_VARIABLES.values(), *(f"stage-{s.lower()}" for s in Stage)}
        styles: dict[str | None, Style] = {None: Style()}
        for variable in wanted - {None}:
            colour = variables.get(variable)
            try:
                styles[variable] = Style(color=colour) if colour else Style()
            except Exception:  # a theme value Rich cannot read (e.g. "auto 87%"): leave it plain
                styles[variable] = Style()
        return styles

