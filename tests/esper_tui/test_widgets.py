"""Widgets and themes, read the way a user reads them: words on the screen, not colours.

Each widget is mounted alone in a tiny app with the real stylesheet and themes, fed a `RunState`
reduced from hand-made events, and checked for what it says.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.color import Color
from textual.widget import Widget
from textual.widgets import Static

from engine.gates import CreditReport, GateCheck
from engine.telemetry.events import (
    CheckpointSaved,
    EpochCompleted,
    GateEvaluated,
    RunStarted,
    SeedGerminated,
    SlotReport,
    StageChanged,
    StepMetrics,
    WarningEvent,
)
from esper_tui.state import LogLine, RunState, apply, apply_all
from esper_tui.status import Status
from esper_tui.widgets import AlphaPlot, EventLog, GatePanel, MetricsPlot, RunHeader, SlotCard
from esper_tui.widgets.alpha_plot import alpha_series, epoch_ticks, plot_window
from esper_tui.widgets.event_log import (
    LogLines,
    category_named,
    filter_title,
    fold_into,
    format_line,
    line_matches,
    lines_after,
    parse_filter,
)
from esper_tui.widgets.metrics_plot import metric_series, metric_title
from esper_tui.widgets.gate_panel import check_rows, gate_title, table_content
from esper_tui.widgets.header import header_text, metrics_line
from esper_tui.widgets.ratio_sparkline import RatioLine, sparkline_content
from themes import PALETTES, STYLESHEETS, THEME_NAMES, THEMES, VARIABLE_DEFAULTS, next_theme

ROOT = Path(__file__).resolve().parents[2]
SIZE = (120, 40)


# ---------------------------------------------------------------------------- a run, by hand
def base(seq: int, epoch: int) -> dict:
    return {"seq": seq, "time": float(seq), "epoch": epoch, "step": epoch * 10}


def report(slot: str, stage: str, **fields) -> SlotReport:
    return SlotReport(slot=slot, stage=stage, **fields)


def run_events() -> list:
    """block1 trains and fails G2 on a low ratio; block2 stays dormant."""
    events = [
        RunStarted(**base(1, 0), run_id="abc123", config={"autopilot": True}, task="digits", topology="cnn",
                   slots=("block1", "block2"), isolation={"blend_detach": True, "source": "default"},
                   device="cpu", planned_epochs=60),
        SeedGerminated(**base(2, 1), slot="block1", seed_id="block1#1", blueprint="conv_light", params=1234),
        StageChanged(**base(3, 1), slot="block1", **{"from": "DORMANT", "to": "GERMINATED"}, cause="autopilot"),
        StageChanged(**base(4, 1), slot="block1", **{"from": "GERMINATED", "to": "TRAINING"}, cause="gate",
                     reason="G1 passed"),
    ]
    seq = 5
    for epoch, ratio in [(1, None), (2, 0.2), (3, 0.031)]:
        events.append(StepMetrics(**base(seq, epoch), loss=1.0 / epoch, lr=0.01, samples_per_s=1234.4))
        events.append(EpochCompleted(
            **base(seq + 1, epoch), train_loss=1.0 / epoch, val_loss=1.2 / epoch, val_accuracy=80.0 + epoch,
            slots=(
                report("block1", "TRAINING", blueprint="conv_light", seed_id="block1#1", epochs_in_stage=epoch,
                       grad_ratio=ratio, grad_ratio_threshold=0.05, params=1234),
                report("block2", "DORMANT"),
            ),
        ))
        seq += 2
    events.append(GateEvaluated(
        **base(seq, 3), slot="block1", gate="G2", target="BLENDING", passed=False,
        checks=(
            GateCheck(name="epochs_in_stage", value=3, threshold=3, passed=True, op=">="),
            GateCheck(name="grad_ratio", value=0.031, threshold=0.05, passed=False, op=">="),
            GateCheck(name="seed_grads_finite", value=True, threshold=True, passed=True),
            GateCheck(name="host_gradients_absent", value=None, threshold="measured", passed=False),
        ),
    ))
    events.append(WarningEvent(**base(seq + 1, 3), slot="block2", code="ratio_near_threshold", message="close call"))
    return events


def make_state() -> RunState:
    return apply_all(RunState(), run_events())


class WidgetApp(App[None]):
    """The smallest host: real stylesheet and themes, the given widgets, nothing else."""

    CSS_PATH = STYLESHEETS

    def __init__(self, *widgets: Widget, theme: str = "esper-dark") -> None:
        super().__init__()
        for t in THEMES.values():
            self.register_theme(t)
        self.theme = theme
        self._widgets = widgets
        self.selected: list[str] = []

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return VARIABLE_DEFAULTS

    def compose(self) -> ComposeResult:
        yield from self._widgets

    def on_slot_card_selected(self, message: SlotCard.Selected) -> None:
        self.selected.append(message.slot)


def screen_text(app: App) -> str:
    """Every character on the screen, as a user without colour sees it."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


# ---------------------------------------------------------------------------- themes
def test_three_themes_by_name_and_cycling():
    assert THEME_NAMES == ("esper-dark", "esper-light", "esper-high-contrast")
    assert THEMES["esper-light"].dark is False and THEMES["esper-dark"].dark is True
    assert next_theme("esper-dark") == "esper-light"
    assert next_theme("esper-high-contrast") == "esper-dark"
    assert next_theme("textual-dark") == "esper-dark"
    for theme in THEMES.values():
        assert theme.variables["stage-training"].startswith("#")
        assert {f"plot-{i}" for i in range(1, 7)} <= set(theme.variables)


def _luminance(hex_colour: str) -> float:
    def channel(c: int) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = Color.parse(hex_colour).rgb
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.parametrize("palette", PALETTES, ids=lambda p: p.name)
def test_every_stage_is_distinct_and_readable(palette):
    stages = palette.stages()
    assert len(stages) == 9 and len(set(stages.values())) == 9
    needed = 7.0 if palette.name == "esper-high-contrast" else 4.5  # WCAG AAA / AA for text
    for name in ("text", "ok", "warn", "error", "accent", *(f"stage_{s.lower()}" for s in stages)):
        colour = palette.colours()[name]
        for ground in (palette.background, palette.surface):
            assert contrast(colour, ground) >= needed, (palette.name, name, colour)


def test_high_contrast_is_pure_black_and_white():
    hc = PALETTES[2]
    assert (hc.background, hc.surface, hc.text) == ("#000000", "#000000", "#ffffff")


def test_colours_live_only_in_the_palettes():
    hex_colour = re.compile(r"#(?:[0-9a-fA-F]{8}|[0-9a-fA-F]{6})\b|\brgba?\(|\bcolou?r=\"")
    files = [ROOT / "themes" / "app.tcss", ROOT / "esper_tui" / "format.py",
             *sorted((ROOT / "esper_tui" / "widgets").glob("*.py"))]
    for path in files:
        assert not hex_colour.search(path.read_text()), path


def test_every_stylesheet_variable_has_a_value_in_every_theme():
    from textual.theme import BUILTIN_THEMES

    used = set()
    for sheet in STYLESHEETS:
        used |= set(re.findall(r"\$([a-z][a-z0-9-]*)", sheet.read_text()))
    assert {"stage-training", "error", "panel-border"} <= used
    builtin = set(BUILTIN_THEMES["textual-dark"].to_color_system().generate())
    for theme in THEMES.values():
        assert used <= builtin | set(theme.variables), theme.name
    assert used <= builtin | set(VARIABLE_DEFAULTS)  # a built-in theme falls back to the defaults


@pytest.mark.asyncio
@pytest.mark.parametrize("theme", [*THEME_NAMES, "textual-dark"])
async def test_the_stylesheet_loads_under_every_theme(theme):
    app = WidgetApp(SlotCard("block1"), GatePanel(), EventLog(), theme=theme if theme in THEMES else "esper-dark")
    async with app.run_test(size=SIZE) as pilot:
        app.theme = theme  # a built-in theme still parses: the custom variables have defaults
        await pilot.pause()
        card = app.query_one(SlotCard)
        card.show(make_state(), "block1")
        await pilot.pause()
        assert card.styles.border_top[0] in ("round", "double")


# ---------------------------------------------------------------------------- header
def test_header_line_says_what_matters_and_fits():
    state = make_state()
    line = header_text(state, "LIVE")
    for words in ("esper", "run abc123", "digits", "epoch 3/60", "LIVE", "1,234 samples/s",
                  "host shielded from blending"):
        assert words in line, words
    assert "autopilot" not in line  # the third line says it, with what the autopilot waits for
    narrow = header_text(state, Status("REPLAY", "x2"), width=50)
    assert len(narrow) <= 50
    assert "REPLAY x2" in narrow and "epoch 3/60" in narrow
    metrics = metrics_line(state)
    assert "val acc 83.0%" in metrics and "lr 0.01" in metrics and "val loss" in metrics


def test_the_header_says_how_many_ranks_train_a_torchrun_run():
    state = RunState()
    started = dict(run_id="r1", config={}, task="digits", topology="cnn", slots=["block1"], device="cpu",
                   isolation={}, versions={}, planned_epochs=5)
    apply(state, RunStarted(**base(1, 0), **started, distributed={"world_size": 2, "backend": "gloo", "rank": 0}))
    assert "2 ranks" in header_text(state, "LIVE")
    apply(state, RunStarted(**base(2, 0), **started))  # one process: nothing said
    assert "ranks" not in header_text(state, "LIVE")


def test_header_of_an_empty_state_uses_dashes():
    line = header_text(RunState(), "STARTING")
    assert "STARTING" in line and "run —" in line and "— samples/s" in line
    assert metrics_line(RunState()) == "val acc —  val loss —  lr —  train loss —"
    assert metrics_line(RunState(), width=30) == "val acc —  val loss —  lr —"


def test_the_metrics_line_shows_the_trend_of_val_accuracy():
    state = RunState()
    for epoch, acc in enumerate([80.0, 85.0, 84.0, 90.0], 1):
        apply(state, EpochCompleted(**base(epoch, epoch), train_loss=0.5, train_accuracy=80.0, val_loss=0.4,
                                    val_accuracy=acc, epoch_time_s=1.0, slots=[]))
    # Scaled to its own range: the lowest point is the lowest block, the highest the top one.
    assert "val acc 90.0% ▁▅▄█ +10.0" in metrics_line(state)


@pytest.mark.asyncio
async def test_header_shows_status_and_override():
    header = RunHeader()
    app = WidgetApp(header)
    async with app.run_test(size=SIZE) as pilot:
        state = make_state()
        header.show(state)
        await pilot.pause()
        assert "LIVE" in header.text and "epoch 3/60" in screen_text(app)
        assert header.has_class("status-LIVE")
        header.show(state, status_override=Status("REPLAY", "x2.0"))
        await pilot.pause()
        assert "REPLAY x2.0" in screen_text(app) and header.has_class("status-REPLAY")
        assert not header.has_class("status-LIVE")
        header.status_override = Status("DETACHED")
        header.show(state)
        await pilot.pause()
        assert "DETACHED" in screen_text(app)


# ---------------------------------------------------------------------------- slot cards
@pytest.mark.asyncio
async def test_slot_card_reads_without_colour():
    state = make_state()
    cards = SlotCard("block1", id="c1"), SlotCard("block2", id="c2")
    app = WidgetApp(*cards)
    async with app.run_test(size=SIZE) as pilot:
        for card in cards:
            card.show(state, "block1")
        await pilot.pause()
        one, two = cards
        assert "[TRAINING] conv_light" in one.text
        assert "r 0.031 (< 0.05)" in one.text  # below threshold, said in words as well
        assert "3 epochs in stage" in one.text and "cf —" in one.text
        assert "1,234 params" in one.text and "alpha 0.00" in one.text
        assert one.has_class("stage-TRAINING") and one.has_class("-selected") and not two.has_class("-selected")
        # colour repeats the words: the badge on its stage's colour, a ratio below threshold in the error colour
        head = one.query_one(".card-head", Static).render()
        assert spans_of(head)["[TRAINING]"] == "bold $background on $stage-training"
        assert spans_of(one.query_one(RatioLine).render())["r 0.031 (< 0.05)"] == "bold $error"
        assert "r —" not in spans_of(two.query_one(RatioLine).render())  # unmeasured: plain
        assert "[DORMANT] (empty)" in two.text and "r — (unmeasured)" in two.text
        text = screen_text(app)
        assert "[TRAINING]" in text and "[DORMANT]" in text and "r — (unmeasured)" in text
        # the sparkline: a gap for the unmeasured epoch, then a passing block, then the lowest block
        assert one.text.splitlines()[3] == "r 0.031 (< 0.05)  █▁"


@pytest.mark.asyncio
async def test_slot_card_follows_stage_changes_and_forced_marker():
    state = make_state()
    card = SlotCard("block1")
    app = WidgetApp(card)
    async with app.run_test(size=SIZE) as pilot:
        card.show(state)
        apply(state, StageChanged(**base(99, 3), slot="block1", **{"from": "TRAINING", "to": "BLENDING"},
                                  cause="operator", forced=True, reason="operator override"))
        card.show(state)
        await pilot.pause()
        assert "[BLENDING]" in card.text and "FORCED" in card.text
        assert card.has_class("stage-BLENDING") and not card.has_class("stage-TRAINING")
        assert card.has_class("-forced") and not card.has_class("-selected")
        assert spans_of(card.query_one(".card-head", Static).render())["conv_light  FORCED"] == "bold $warning"


@pytest.mark.asyncio
async def test_a_card_shown_as_soon_as_it_is_mounted_draws_once_composed():
    app = WidgetApp()
    async with app.run_test(size=SIZE) as pilot:
        cards = [SlotCard("block1"), SlotCard("block2")]
        app.mount_all(cards)  # as the dashboard does when the slots first appear: show() follows at once
        for card in cards:
            card.show(make_state(), "block1")
        await pilot.pause()
        assert "[TRAINING]" in cards[0].text and cards[0].has_class("-selected")
        assert "[DORMANT]" in screen_text(app)


@pytest.mark.asyncio
async def test_clicking_a_card_posts_selected():
    card = SlotCard("block2")
    app = WidgetApp(card)
    async with app.run_test(size=SIZE) as pilot:
        card.show(make_state())
        await pilot.click(SlotCard)
        await pilot.pause()
        assert app.selected == ["block2"]


def spans_of(content) -> dict[str, str]:
    """Each styled stretch of a Content: its text → its style."""
    return {content.plain[span.start:span.end]: str(span.style) for span in content.spans}


def test_sparkline_content_styles_below_threshold_as_error():
    content = sparkline_content([0.01, None, 0.5], 0.05, 10)
    assert content.plain == "▁ █"
    styles = {content.plain[span.start:span.end]: str(span.style) for span in content.spans}
    assert styles["▁"] == "$error" and styles["█"] == "$success"


def probation_events() -> list:
    """block1 in PROBATIONARY with a measured credit, then its G5 verdict."""
    credit = dict(counterfactual=1.8, credit_low=0.9, credit_high=2.7, credit_method="shadow_twin")
    return [*run_events(),
            EpochCompleted(**base(40, 9), train_loss=0.2, val_loss=0.3, val_accuracy=95.0, slots=(
                report("block1", "PROBATIONARY", blueprint="conv_light", seed_id="block1#1", epochs_in_stage=3,
                       alpha=1.0, params=1234, **credit),
                report("block2", "DORMANT"))),
            GateEvaluated(**base(41, 9), slot="block1", gate="G5", target="FOSSILIZED", passed=False, checks=(
                GateCheck(name="epochs_in_stage", value=3, threshold=3, passed=True, op=">="),
                GateCheck(name="credit_low", value=0.9, threshold=1.0, passed=False, op=">=",
                          credit=CreditReport(**credit)),
            ))]


@pytest.mark.asyncio
async def test_slot_card_shows_credit_with_its_interval():
    state = apply_all(RunState(), probation_events())
    card = SlotCard("block1", id="c1")
    app = WidgetApp(card)
    async with app.run_test(size=SIZE) as pilot:
        card.show(state, "block1")
        await pilot.pause()
        assert "cf +1.8 [+0.9, +2.7] shadow_twin" in card.text
        assert "cf +1.8 [+0.9, +2.7]" in screen_text(app)  # credit leads its line, so it is never cut off
        app.screen.add_class("compact")  # 80×24: the detail line goes, but not a measured credit
        await pilot.pause()
        assert "cf +1.8 [+0.9, +2.7]" in screen_text(app)


def test_gate_rows_show_the_credit_estimate_and_its_method():
    state = apply_all(RunState(), probation_events())
    rows = check_rows(state.slots["block1"].gate)
    assert ("FAIL", "needs credit's lower bound ≥ 1 (now 0.9); credit cf +1.8 [+0.9, +2.7], shadow_twin") in rows


# ---------------------------------------------------------------------------- gate panel
def test_gate_rows_say_pass_fail_and_values():
    state = make_state()
    gate = state.slots["block1"].gate
    assert gate_title(gate) == "G2 -> BLENDING  FAILED (epoch 3)"
    rows = check_rows(gate)
    # Sentences with their comparators, never a bare "x vs y".
    assert ("FAIL", "needs gradient ratio ≥ 0.05 (now 0.031)") in rows
    assert ("PASS", "seed grads finite: yes") in rows
    assert ("FAIL", "needs gradient ratio measured (not measured yet)") in rows
    assert gate_title(None) == "no gate evaluated yet"
    narrow = table_content(rows, width=30).plain
    assert "FAIL needs gradient ratio ≥\n     0.05 (now 0.031)" in narrow
    assert " vs " not in table_content(rows).plain


@pytest.mark.asyncio
async def test_gate_panel_shows_the_selected_slot():
    state = make_state()
    panel = GatePanel()
    app = WidgetApp(panel)
    async with app.run_test(size=SIZE) as pilot:
        panel.show(state, "block1")
        await pilot.pause()
        text = screen_text(app)
        assert "G2 -> BLENDING  FAILED (epoch 3)" in text
        assert "FAIL needs gradient ratio ≥ 0.05 (now 0.031)" in text
        assert "PASS epochs in stage 3 ≥ 3" in text
        assert panel.has_class("-failed")
        panel.show(state, "block2")
        await pilot.pause()
        assert "no gate evaluated yet" in screen_text(app) and panel.has_class("-empty")
        panel.show(state, None)
        await pilot.pause()
        assert "no slot selected" in panel.text


class NarrowPanelApp(WidgetApp):
    CSS = "GatePanel { width: 32; height: 12; }"  # as at 80x24: more checks than rows, so they scroll


@pytest.mark.asyncio
async def test_a_narrow_gate_panel_wraps_each_check_once_between_words():
    state = make_state()
    checks = tuple(GateCheck(name=name, value=0.031, threshold=0.05, passed=False, op=">=")
                   for name in ("grad_ratio", "epochs_in_stage", "alpha", "grad_ratio", "alpha"))
    apply(state, GateEvaluated(**base(60, 5), slot="block1", gate="G2", target="BLENDING", passed=False,
                               checks=checks))
    panel = GatePanel()
    app = NarrowPanelApp(panel)
    async with app.run_test(size=(40, 14)) as pilot:
        panel.show(state, "block1")
        await pilot.pause()
        rows = screen_text(app).splitlines()[1:11]
        start = next(i for i, line in enumerate(rows) if line[2:].startswith("FAIL "))
        shown = [line[2:28].rstrip() for line in rows[start:]]
        # 32 columns: 2 of border, 2 of padding, 2 of scrollbar gutter leave 26 for the table. What
        # is shown is the panel's own wrapping, line for line, never wrapped again beside the
        # scrollbar (which left a lone "≥" with its number pushed under it).
        wrapped = table_content(check_rows(state.slots["block1"].gate), 26).plain.splitlines()
        assert len(wrapped) > len(shown)  # the checks scroll
        assert shown == [line.rstrip() for line in wrapped[:len(shown)]]
        assert shown[:2] == ["FAIL needs gradient ratio", "     ≥ 0.05 (now 0.031)"]


@pytest.mark.asyncio
async def test_gate_panel_marks_a_forced_gate():
    state = make_state()
    failing = state.slots["block1"].gate
    apply(state, GateEvaluated(**base(50, 4), slot="block1", gate="G2", target="BLENDING", passed=False, forced=True,
                               checks=(GateCheck(name="grad_ratio", value=0.031, threshold=0.05, passed=False),)))
    assert failing is not state.slots["block1"].gate
    panel = GatePanel()
    app = WidgetApp(panel)
    async with app.run_test(size=SIZE) as pilot:
        panel.show(state, "block1")
        await pilot.pause()
        assert "FORCED" in panel.text and "FAIL forced" in panel.text and panel.has_class("-forced")


# ---------------------------------------------------------------------------- event log
def test_log_line_matching_and_appending():
    state = make_state()
    lines = list(state.log)
    assert format_line(lines[2]).startswith("e1 #3 block1: DORMANT -> GERMINATED")
    assert all(line_matches(line, "") for line in lines)
    assert [line.kind for line in lines if line_matches(line, "close CALL")] == ["warning"]
    assert [line.kind for line in lines if line_matches(line, "block2")] == ["run_started", "warning"]
    assert lines_after(state.log, lines[-2].n) == lines[-1:]
    assert lines_after(state.log, 0) == lines


def test_a_filter_takes_words_and_kinds():
    flt = parse_filter("kind:gates  Block2 -kind:ckpt")
    assert (flt.words, flt.kinds, flt.hidden, flt.unknown) == ("Block2", {"gates"}, {"checkpoints"}, ())
    assert parse_filter("kind:op,auto").kinds == {"operator", "autopilot"}  # any unambiguous start
    assert parse_filter("KIND:Lifecycle").kinds == {"lifecycle"} and parse_filter("kind:stage").kinds == {"lifecycle"}
    assert parse_filter("kind:g").unknown == ("g",)  # gates or governor: ambiguous, so no kind
    assert category_named("warn") == "warnings" and category_named("nonsense") is None
    assert parse_filter("").empty and not parse_filter("-kind:checkpoints").empty


def steered_lines():
    from engine.telemetry import read_events

    return list(apply_all(RunState(), read_events(ROOT / "tests" / "fixtures" / "steered-run.jsonl").events).log)


def test_filtering_by_kind_finds_gates_wherever_they_decided():
    lines = steered_lines()
    gates = [line.text for line in lines if line_matches(line, "kind:gates")]
    assert "block1: TRAINING -> BLENDING (G2 passed)" in gates  # a stage change a gate decided
    assert any(t.startswith("operator: advance block2: rejected: G2 failed") for t in gates)  # a refusal by G2
    assert not any(t.startswith(("autopilot", "checkpoint")) for t in gates)
    operator = [line.text for line in lines if line_matches(line, "kind:operator")]
    assert operator[0] == "operator: pause: applied" and all(t.startswith("operator: ") for t in operator)
    assert "operator: cull block7 (reason: operator cull): rejected: unknown slot 'block7'; this host's slots are " \
           "block1, block2" in operator
    quiet = [line for line in lines if line_matches(line, "-kind:checkpoints")]
    assert quiet and not any(line.kind == "checkpoint_saved" for line in quiet)
    assert not [line for line in lines if line_matches(line, "kind:nonsense")]  # shows nothing, says why
    assert filter_title("kind:nonsense", parse_filter("kind:nonsense")) == "events (filter: kind:nonsense)"


def log_line(n: int, kind: str, epoch: int, text: str = "") -> LogLine:
    return LogLine(n, epoch, kind, None, text or kind, n=n)


def test_runs_of_checkpoints_fold_into_one_row():
    rows: list = []
    for n, (kind, epoch, text) in enumerate([
        ("stage_changed", 3, "block1: TRAINING -> BLENDING (G2 passed)"),
        ("checkpoint_saved", 5, "checkpoint saved (epoch 5)"),
        ("checkpoint_saved", 10, "checkpoint saved (epoch 10)"),
        ("checkpoint_saved", 15, "checkpoint saved (epoch 15)"),
    ], 1):
        changed = fold_into(rows, log_line(n, kind, epoch, text))
    assert changed == 1  # only the tail changed: what came before is not redrawn
    assert [format_line(row) for row in rows] == [
        "e3 #1 block1: TRAINING -> BLENDING (G2 passed)",
        "e15 #4 checkpoints saved at epochs 5, 10, 15",
    ]
    fold_into(rows, log_line(5, "stage_changed", 16, "block1: BLENDING -> SHADOWING (G3 passed)"))
    fold_into(rows, log_line(6, "checkpoint_saved", 20, "checkpoint saved (epoch 20)"))
    assert format_line(rows[-1]) == "e20 #6 checkpoint saved (epoch 20)"  # a new run after other news
    for n, epoch in enumerate([*range(25, 65, 5), 60], 7):  # the last one twice: the save at the end
        fold_into(rows, log_line(n, "checkpoint_saved", epoch))
    assert format_line(rows[-1]) == "e60 #15 checkpoints saved at epochs 20, 25, …, 60 (9 saves)"
    assert len(rows) == 4


def stage_style(app: App, log: EventLog, needle: str):
    (text,) = [t for t in log.query_one(LogLines)._texts if needle in t.plain]
    return text.get_style_at_offset(app.console, len(text.plain) - 1)


@pytest.mark.asyncio
async def test_event_log_filters_folds_and_appends_only_new_rows():
    state = make_state()
    log = EventLog()
    app = WidgetApp(log)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        log.show(state)
        await pilot.pause()
        assert len(log.lines) == len(state.log) == 5
        assert "e1 #4 block1: GERMINATED -> TRAINING (G1 passed)" in log.lines
        view = log.query_one(LogLines)
        written: list = []
        original = view.replace_from
        view.replace_from = lambda index, texts: (written.append((index, [t.plain for t in texts])),
                                                  original(index, texts))[1]
        log.show(state)  # nothing new: nothing written
        assert written == []
        apply(state, WarningEvent(**base(100, 4), slot="block1", code="c", message="new one"))
        log.show(state)
        assert written == [(5, ["e4 #100 warning block1: new one"])]
        # Checkpoints every 5 epochs: one short row that grows, and only that row is redrawn.
        for seq, epoch in ((101, 5), (102, 10), (103, 15)):
            apply(state, CheckpointSaved(**base(seq, epoch), path=f"/home/me/runs/r/epoch{epoch}/checkpoint.pt"))
            log.show(state)
        assert written[-1] == (6, ["e15 #103 checkpoints saved at epochs 5, 10, 15"])
        await pilot.pause()
        text = screen_text(app)
        assert "checkpoints saved at epochs 5, 10, 15" in text and "checkpoint.pt" not in text
        assert len(log.lines) == 7
        # A stage change stands out: bold, in its stage's colour from the theme.
        style = stage_style(app, log, "GERMINATED -> TRAINING")
        assert style.bold and style.color.triplet.hex == THEMES["esper-dark"].variables["stage-training"]
        log.set_filter("kind:warnings")
        assert log.lines == ["e3 #12 warning block2: close call", "e4 #100 warning block1: new one"]
        log.set_filter("Block2")
        assert log.lines == ["e0 #1 run abc123 started: task digits, cnn host on cpu, 60 epochs, slots block1, block2; "
                             "host shielded from blending seeds (default)", "e3 #12 warning block2: close call"]
        assert "filter: Block2" in str(log.border_title)
        await pilot.pause()
        text = screen_text(app)
        assert "close call" in text and "GERMINATED" not in text
        log.set_filter("kind:nonsense")  # no such kind: the panel says so, and names the kinds there are
        await pilot.pause()
        assert log.lines == [] and "no kind nonsense; the kinds are: lifecycle gates" in screen_text(app)
        log.set_filter("[/x]")  # typed by the operator: text, never markup (it used to crash the app)
        await pilot.pause()
        assert "filter: [/x]" in screen_text(app)
        log.set_filter("")
        assert len(log.lines) == 7


@pytest.mark.asyncio
async def test_a_long_log_stays_bounded_and_follows_the_newest_row():
    state = make_state()
    log = EventLog(max_lines=50)
    app = WidgetApp(log)
    async with app.run_test(size=(80, 24)) as pilot:
        for i in range(200):
            apply(state, WarningEvent(**base(1000 + i, 5 + i), slot="block1", code="c", message=f"number {i}"))
        log.show(state)
        await pilot.pause()
        assert len(log.lines) == 50 and log.lines[-1].endswith("number 199")
        assert "number 199" in screen_text(app) and "number 150" not in screen_text(app)


# ---------------------------------------------------------------------------- plots
def grown_state(epochs: int = 100, blend_at: int = 80, task: str = "digits", topology: str = "cnn") -> RunState:
    """A long run: block1 germinates at `blend_at - 3`, blends over 5 epochs from `blend_at`; block2 never
    holds a seed. Accuracy climbs; the loss falls."""
    state = apply_all(RunState(), [RunStarted(
        **base(1, 0), run_id="long", config={}, task=task, topology=topology, slots=("block1", "block2"),
        isolation={"blend_detach": True, "source": "default"}, device="cpu", planned_epochs=epochs)])
    seq = 2
    for epoch in range(1, epochs + 1):
        if epoch == blend_at - 3:
            apply(state, SeedGerminated(**base(seq, epoch), slot="block1", seed_id="block1#1", blueprint="norm",
                                        params=10))
            seq += 1
        alive = epoch >= blend_at - 3
        alpha = min(1.0, max(0.0, (epoch - blend_at) / 5)) if alive else 0.0
        stage = "DORMANT" if not alive else "TRAINING" if epoch < blend_at else "BLENDING"
        apply(state, EpochCompleted(**base(seq, epoch), train_loss=2.0 / epoch, val_loss=2.2 / epoch,
                                    train_accuracy=50 + epoch * 0.4, val_accuracy=48 + epoch * 0.4, slots=(
                                        report("block1", stage, alpha=alpha, seed_id="block1#1" if alive else None,
                                               blueprint="norm" if alive else None),
                                        report("block2", "DORMANT"))))
        seq += 1
    return state


def test_the_curves_follow_the_recent_epochs_in_whole_epochs():
    state = grown_state()
    assert plot_window(state) == (71, 100)  # the last 30 epochs: a 5-epoch ramp is a sixth of the plot
    (series,) = alpha_series(state, "block1")  # block2 never held a seed: no flat line at 0
    label, epochs, alphas = series
    # From the last epoch at 0 (blending starts) to the end: no flat line for the epochs before.
    assert label == "*block1" and epochs[0] == 80 and alphas[0] == 0.0 and epochs[-1] == 100 and max(alphas) == 1.0
    assert epoch_ticks(71, 100) == [75, 80, 85, 90, 95, 100]
    assert all(isinstance(t, int) for t in epoch_ticks(1, 7)) and epoch_ticks(1, 3) == [1, 2, 3]
    early = grown_state(epochs=100, blend_at=40)  # a live seed germinated 64 epochs ago: back to it, at most 60
    assert plot_window(early) == (41, 100)
    assert plot_window(grown_state(epochs=12, blend_at=50)) == (1, 12)
    assert alpha_series(grown_state(epochs=12, blend_at=50)) == []  # no seed yet: nothing drawn
    accuracy = metric_series(state)
    assert [label for label, _, _ in accuracy] == ["val", "train"]
    assert accuracy[0][1][0] == 71 and accuracy[0][2][-1] == pytest.approx(88.0)


def test_alpha_lines_start_at_the_ramp_and_end_at_a_cull():
    state = RunState()
    alphas = {"block1": [0, 0, 0, 0.5, 1, 1, 0, 0, 0], "block2": [0] * 9, "block3": [0, 0, 0, 0, 0, 0, 0, 0, 0.2]}
    for epoch in range(1, 10):
        apply(state, EpochCompleted(**base(epoch, epoch), val_accuracy=50.0, slots=tuple(
            report(slot, "TRAINING", alpha=values[epoch - 1], seed_id=f"{slot}#1") for slot, values in alphas.items())))
    series = {label: (epochs, values) for label, epochs, values in alpha_series(state)}
    assert list(series) == ["block1", "block3"]  # block2 trains but never blends: no line at 0
    assert series["block1"] == ((3, 4, 5, 6, 7), (0, 0.5, 1, 1, 0))  # culled at 7: the fall, then nothing
    assert series["block3"] == ((8, 9), (0, 0.2))


def test_a_language_model_is_plotted_in_bits_per_character():
    state = grown_state(task="text", topology="transformer")
    assert metric_title(state) == "bits per character (lower is better)"
    (val, train) = metric_series(state)
    assert val[0] == "val" and val[2][-1] == pytest.approx(2.2 / 100 / math.log(2))
    assert metric_title(grown_state()) == "accuracy %"


@pytest.mark.asyncio
async def test_plots_say_what_each_line_is_without_colour_and_redraw_only_on_change():
    state = grown_state()
    alpha, metrics = AlphaPlot(), MetricsPlot()
    app = WidgetApp(alpha, metrics)
    async with app.run_test(size=SIZE) as pilot:
        alpha.show(state, "block1")
        metrics.show(state)
        await pilot.pause()
        assert alpha.labels == ["*block1"] and metrics.labels == ["val", "train"]
        text = screen_text(app)
        # The legend is in the title, off the curves; each line has its own marker (not only a colour).
        assert "alpha: ⢕ *block1" in text and "accuracy %: ⢕ val  • train" in text
        assert "•" in text.split("accuracy %")[1]  # the train line is drawn in dots
        ticks = [line for line in text.splitlines() if re.search(r"\b75\b.*\b100\b", line)]
        assert ticks and not re.search(r"\d\.\d", ticks[0])  # whole epochs on the x axis
        assert "block2" not in text  # never held a seed: not drawn
        cleared: list[str] = []
        for plot in (alpha, metrics):
            original = plot.plt.clear_figure
            plot.plt.clear_figure = lambda o=original, p=plot: (cleared.append(type(p).__name__), o())[1]
        alpha.show(state, "block1")
        metrics.show(state)
        assert cleared == []  # same data: no redraw
        apply(state, EpochCompleted(**base(999, 101), val_loss=0.5, val_accuracy=85.0,
                                    slots=(report("block1", "BLENDING", alpha=1.0, seed_id="block1#1"),)))
        alpha.show(state, "block1")
        metrics.show(state)
        assert cleared == ["AlphaPlot", "MetricsPlot"]
        app.theme = "esper-light"  # a theme change redraws with the new line colours
        await pilot.pause()
        await pilot.pause()
        assert cleared.count("AlphaPlot") == 2


@pytest.mark.asyncio
async def test_compact_screen_hides_plots_and_shortens_cards():
    state = make_state()
    card, alpha = SlotCard("block1"), AlphaPlot()
    app = WidgetApp(card, alpha, MetricsPlot())
    async with app.run_test(size=(80, 24)) as pilot:
        card.show(state)
        await pilot.pause()
        tall = card.outer_size.height
        app.screen.add_class("compact")
        await pilot.pause()
        assert alpha.display is False or alpha.styles.display == "none"
        assert card.outer_size.height <= 5 < tall
        assert "[TRAINING]" in screen_text(app)
        # What the seed still needs stays on the card at 80×24 (the detail line is what goes).
        assert "G2 needs gradient ratio" in screen_text(app)


@pytest.mark.asyncio
async def test_event_log_follows_the_newest_line_through_bursts_until_scrolled_up():
    state = make_state()
    log = EventLog()
    app = WidgetApp(log)
    async with app.run_test(size=(80, 12)) as pilot:
        log.show(state)
        await pilot.pause()
        # A burst: lines arrive faster than the screen refreshes (a live run catching up).
        for i in range(60):
            apply(state, WarningEvent(**base(200 + i, 5), slot="block1", code="c", message=f"burst line {i}"))
            log.show(state)
            if i % 7 == 0:
                await pilot.pause()  # some frames come in between, as on a live screen
        await pilot.pause()
        await pilot.pause()
        assert "burst line 59" in screen_text(app)
        log.styles.height = 6  # the panel gets shorter (a card above grew a line): still following
        await pilot.pause()
        apply(state, WarningEvent(**base(290, 6), slot="block1", code="c", message="after the shrink"))
        log.show(state)
        await pilot.pause()
        await pilot.pause()
        assert "after the shrink" in screen_text(app)
        log.query_one("LogLines").scroll_home(animate=False)  # the operator reads back: it stays put
        await pilot.pause()
        apply(state, WarningEvent(**base(300, 6), slot="block1", code="c", message="one more"))
        log.show(state)
        await pilot.pause()
        assert "one more" not in screen_text(app) and "burst line 59" not in screen_text(app)
