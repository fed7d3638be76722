"""Widgets and themes, read the way a user reads them: words on the screen, not colours.

Each widget is mounted alone in a tiny app with the real stylesheet and themes, fed a `RunState`
reduced from hand-made events, and checked for what it says.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.color import Color
from textual.widget import Widget

from engine.gates import CreditReport, GateCheck
from engine.telemetry.events import (
    EpochCompleted,
    GateEvaluated,
    RunStarted,
    SeedGerminated,
    SlotReport,
    StageChanged,
    StepMetrics,
    WarningEvent,
)
from esper_tui.state import RunState, apply, apply_all
from esper_tui.widgets import AlphaPlot, EventLog, GatePanel, MetricsPlot, RunHeader, SlotCard
from esper_tui.widgets.event_log import format_line, line_matches, lines_after
from esper_tui.widgets.gate_panel import check_rows, gate_title, table_content
from esper_tui.widgets.header import header_text
from esper_tui.widgets.ratio_sparkline import sparkline_content
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
            GateCheck(name="epochs_in_stage", value=3, threshold=3, passed=True),
            GateCheck(name="grad_ratio", value=0.031, threshold=0.05, passed=False),
            GateCheck(name="seed_grads_finite", value=True, threshold=True, passed=True),
            GateCheck(name="host_gradients_absent", value=None, threshold=None, passed=False),
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
    for words in ("esper", "run abc123", "digits", "epoch 3/60", "LIVE", "1,234 samples/s", "autopilot on",
                  "val 83.0%", "lr 0.01", "detach"):
        assert words in line, words
    narrow = header_text(state, "REPLAY x2", width=50)
    assert len(narrow) <= 50
    assert "REPLAY x2" in narrow and "epoch 3/60" in narrow


def test_header_of_an_empty_state_uses_dashes():
    line = header_text(RunState(), "STARTING")
    assert "STARTING" in line and "run —" in line and "val —" in line and "— samples/s" in line


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
        header.show(state, status_override="REPLAY x2.0")
        await pilot.pause()
        assert "REPLAY x2.0" in screen_text(app) and header.has_class("status-REPLAY")
        assert not header.has_class("status-LIVE")
        header.status_override = "DETACHED"
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
        assert one.has_class("stage-TRAINING") and one.query_one(".badge").has_class("stage-TRAINING")
        assert one.has_class("-selected") and not two.has_class("-selected")
        assert one.query_one(".ratio-label").has_class("-below")
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
                GateCheck(name="epochs_in_stage", value=3, threshold=3, passed=True),
                GateCheck(name="credit_low", value=0.9, threshold=1.0, passed=False, credit=CreditReport(**credit)),
            ))]


@pytest.mark.asyncio
async def test_slot_card_shows_credit_with_its_interval():
    state = apply_all(RunState(), probation_events())
    card = SlotCard("block1", id="c1")
    app = WidgetApp(card)
    async with app.run_test(size=SIZE) as pilot:
        card.show(state, "block1")
        await pilot.pause()
        assert "cf +1.8 [+0.9, +2.7]" in card.text
        assert "cf +1.8 [+0.9, +2.7]" in screen_text(app)  # credit leads its line, so it is never cut off


def test_gate_rows_show_the_credit_estimate_and_its_method():
    state = apply_all(RunState(), probation_events())
    rows = check_rows(state.slots["block1"].gate)
    assert ("FAIL", "credit_low (shadow_twin)", "cf +1.8 [+0.9, +2.7]", "1") in rows


# ---------------------------------------------------------------------------- gate panel
def test_gate_rows_say_pass_fail_and_values():
    state = make_state()
    gate = state.slots["block1"].gate
    assert gate_title(gate) == "G2 -> BLENDING  FAILED (epoch 3)"
    rows = check_rows(gate)
    assert ("FAIL", "grad_ratio", "0.031", "0.05") in rows
    assert ("PASS", "seed_grads_finite", "yes", "yes") in rows
    assert ("FAIL", "host_gradients_absent", "—", "—") in rows
    assert gate_title(None) == "no gate evaluated yet"
    narrow = table_content(rows, width=20).plain
    assert "FAIL grad_ratio\n     0.031 vs 0.05" in narrow


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
        assert re.search(r"FAIL\s+grad_ratio\s+0\.031\s+0\.05", text)
        assert re.search(r"PASS\s+epochs_in_stage\s+3\s+3", text)
        assert panel.has_class("-failed")
        panel.show(state, "block2")
        await pilot.pause()
        assert "no gate evaluated yet" in screen_text(app) and panel.has_class("-empty")
        panel.show(state, None)
        await pilot.pause()
        assert "no slot selected" in panel.text


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
    assert [line.slot for line in lines if line_matches(line, "BLOCK2")] == ["block2"]
    assert [line.kind for line in lines if line_matches(line, "warning")] == ["warning"]
    assert lines_after(state.log, lines[-2].n) == lines[-1:]
    assert lines_after(state.log, 0) == lines


@pytest.mark.asyncio
async def test_event_log_filters_and_appends_only_new_lines():
    state = make_state()
    log = EventLog()
    app = WidgetApp(log)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        log.show(state)
        await pilot.pause()
        assert len(log.lines) == len(state.log) == 5
        assert "e1 #4 block1: GERMINATED -> TRAINING (gate) G1 passed" in log.lines
        written: list = []
        rich_log = log.query_one("RichLog")
        original = rich_log.write
        rich_log.write = lambda content, *a, **k: (written.append(content), original(content, *a, **k))[1]
        log.show(state)  # nothing new: nothing written
        assert written == []
        apply(state, WarningEvent(**base(100, 4), slot="block1", code="c", message="new one"))
        log.show(state)
        assert len(written) == 1 and "new one" in written[0].plain
        log.set_filter("Block2")
        assert log.lines == ["e3 #12 warning ratio_near_threshold: close call"]
        assert "filter: Block2" in str(log.border_title)
        await pilot.pause()
        text = screen_text(app)
        assert "close call" in text and "GERMINATED" not in text
        log.set_filter("[/x]")  # typed by the operator: text, never markup (it used to crash the app)
        await pilot.pause()
        assert "filter: [/x]" in screen_text(app)
        log.set_filter("")
        assert len(log.lines) == 6


# ---------------------------------------------------------------------------- plots
@pytest.mark.asyncio
async def test_plots_draw_labelled_lines_and_redraw_only_on_change():
    state = make_state()
    alpha, metrics = AlphaPlot(), MetricsPlot()
    app = WidgetApp(alpha, metrics)
    async with app.run_test(size=SIZE) as pilot:
        alpha.show(state, "block1")
        metrics.show(state)
        await pilot.pause()
        assert alpha.labels == ["*block1", "block2"]
        assert metrics.labels == ["train loss", "val loss", "val acc %"]
        text = screen_text(app)
        assert "alpha by slot" in text and "loss / accuracy" in text and "val acc %" in text
        cleared: list[str] = []
        for plot in (alpha, metrics):
            original = plot.plt.clear_figure
            plot.plt.clear_figure = lambda o=original, p=plot: (cleared.append(type(p).__name__), o())[1]
        alpha.show(state, "block1")
        metrics.show(state)
        assert cleared == []  # same data: no redraw
        apply(state, EpochCompleted(**base(60, 4), val_loss=0.5, val_accuracy=85.0,
                                    slots=(report("block1", "TRAINING", alpha=0.0),)))
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
        assert card.outer_size.height <= 4 < tall
        assert "[TRAINING]" in screen_text(app)
