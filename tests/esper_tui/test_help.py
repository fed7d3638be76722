"""The help screen teaches: the lifecycle, each gate, what credit means, the log filter and the keys, and
it fits (by scrolling) at 80x24."""

from __future__ import annotations

import re

import pytest
from textual.app import App
from textual.containers import VerticalScroll

from engine.gates import GateThresholds
from engine.lifecycle import HAPPY_PATH, Stage
from esper_tui.keys import KEYS, help_rows
from esper_tui.screens.help import HelpScreen, gate_lines, guide_sections, keys_text
from themes import STYLESHEETS, THEMES, VARIABLE_DEFAULTS


class HelpApp(App[None]):
    CSS_PATH = STYLESHEETS

    def __init__(self, screen: HelpScreen) -> None:
        super().__init__()
        for theme in THEMES.values():
            self.register_theme(theme)
        self.theme = "esper-dark"
        self._help = screen

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return VARIABLE_DEFAULTS

    def on_mount(self) -> None:
        self.push_screen(self._help)


def screen_lines(app: App) -> list[str]:
    return [strip.text for strip in app.screen._compositor.render_strips()]


def test_the_guide_names_every_stage_in_order_and_every_gate_once():
    sections = {heading: (paragraph, rows) for heading, paragraph, rows in guide_sections()}
    lifecycle = next(rows for heading, (_, rows) in sections.items() if "lifecycle" in heading)
    assert [stage for stage, _ in lifecycle] == [*map(str, HAPPY_PATH), "CULLED", "EMBARGOED"]
    assert "max(5, 10% of the run)" in dict(lifecycle)["PROBATIONARY"]  # the probation limit, in numbers
    assert "5 epochs" in dict(lifecycle)["EMBARGOED"]
    gates = dict(gate_lines(guide_config()))
    assert list(gates) == ["G0", "G1", "G2", "G3", "G4", "G5"]
    assert gates["G2"].startswith("-> BLENDING: ≥ 3 epochs training, gradient ratio ≥ cnn 0.2, transformer 0.04")
    assert "alpha ≥ 0.99" in gates["G3"] and "val loss at most 5% above before blending" in gates["G4"]
    assert "credit's lower bound ≥ 1 point" in gates["G5"]
    assert all(line.startswith(f"-> {stage}:") for line, stage in zip(gates.values(), list(Stage)[1:7]))


def guide_config():
    from engine.config import LifecycleConfig

    return LifecycleConfig()


def test_credit_is_explained_with_its_interval_and_method():
    ((paragraph, _),) = [(p, r) for h, p, r in guide_sections() if h.startswith("Credit")]
    for words in ("points of val accuracy the seed adds", "the same network without it", "90% interval",
                  "shadow_twin", "lower bound ≥ 1", "upper bound is ≤ 0"):
        assert words in paragraph, words


def test_the_run_s_own_thresholds_are_shown():
    config = {"lifecycle": {"gates": GateThresholds(g5_min_counterfactual=2.5, g2_min_epochs=4).model_dump(),
                            "embargo_epochs": 2},
              "credit": {"method": "ablation_bn", "confidence": 0.8}, "epochs": 80}
    sections = guide_sections(config)
    text = " ".join(p + " ".join(w for _, w in rows) for _, p, rows in sections)
    assert "≥ 4 epochs training" in text and "lower bound ≥ 2.5" in text and "rests 2 epochs" in text
    assert "80% interval" in text and "this run: ablation_bn" in text
    assert "on trial for at most 8 epochs: max(5, 10% of the run)" in text  # the limit, worked out
    assert "≥ 3 epochs training" in " ".join(w for _, _, rows in guide_sections({"lifecycle": {"bogus": 1}})
                                              for _, w in rows)  # unreadable: the defaults


def test_the_filter_and_every_key_are_listed():
    ((_, _, rows),) = [s for s in guide_sections() if s[0].startswith("Event log filter")]
    words = dict(rows)
    assert "kind:NAME" in words and "-kind:NAME" in words["kind:NAME"]
    assert words["kinds"] == "lifecycle gates operator autopilot governor warnings checkpoints run"
    keys = keys_text(help_rows())
    for key in KEYS:
        assert any(line.split() == [key.label, *key.help_text.split()] for line in keys.splitlines()), key


@pytest.mark.asyncio
async def test_help_fits_and_scrolls_at_80x24_and_closes():
    app = HelpApp(HelpScreen())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        lines = screen_lines(app)
        assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
        top = "\n".join(lines)
        assert "Seeds and their lifecycle" in top and "DORMANT" in top and "TRAINING" in top
        scroller = app.screen.query_one(VerticalScroll)
        assert scroller.max_scroll_y > 0 and scroller.has_focus  # longer than the screen: the keys scroll it
        region = scroller.region
        assert region.x >= 0 and region.right <= 80 and region.bottom <= 24
        await pilot.press("end")
        await pilot.pause()
        bottom = "\n".join(screen_lines(app))
        assert "closes this help" in bottom and "command palette" in bottom
        await pilot.press("pageup", "home")
        await pilot.pause()
        assert "Seeds and their lifecycle" in "\n".join(screen_lines(app))
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


@pytest.mark.asyncio
async def test_help_at_120x40_shows_each_gate_on_one_line():
    app = HelpApp(HelpScreen(help_rows()))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.pause()
        text = "\n".join(screen_lines(app))
        for gate in ("G0", "G1", "G3", "G5"):
            (line,) = [line for line in text.splitlines() if re.search(rf"\b{gate}\s+->", line)]
            # The help scrolls (its scrollbar may be drawn on the line): the gate's text itself is whole.
            assert line.rstrip(" │▁▂▃▄▅▆▇█▔").rstrip().endswith(("point, seed healthy", "params", "finite on a probe",
                                                                 "epochs blending")), line
