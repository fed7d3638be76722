"""The whole-network view (key `w`), read the way an operator reads it: which slot holds which seed in
which stage, in host order; where seeds were fossilized; parameters of host, seeds and budget; how
far the run is and when it ends. Pure rules first, then the view in the app at 80×24 and 120×40.
"""

from __future__ import annotations

import time

import pytest

from engine.telemetry.events import EpochCompleted, RunStarted, SeedGerminated, SlotReport, StageChanged
from esper_tui.app import EsperApp
from esper_tui.state import PAUSED, RunState, apply_all
from esper_tui.widgets import NetworkView, SlotCard
from esper_tui.widgets.network import eta_seconds, fmt_duration, network_text, params_of
from tests.esper_tui.static_source import StaticSource


def base(seq: int, epoch: int) -> dict:
    return {"seq": seq, "time": float(seq), "epoch": epoch, "step": epoch * 10}


def grown_run(*, pace: float | None = None, epoch_time: float = 2.0) -> list:
    """A 3-slot run at epoch 4 of 20: block0 fossilized, block1 blending, block2 empty."""
    config = {"lifecycle": {"gates": {"param_budget_fraction": 1.5}}}
    if pace is not None:
        config["min_epoch_seconds"] = pace
    events = [
        RunStarted(**base(1, 0), run_id="net01", config=config, task="digits", topology="cnn",
                   slots=("block0", "block1", "block2"), isolation={"blend_detach": True, "source": "default"},
                   device="cpu", planned_epochs=20),
        SeedGerminated(**base(2, 1), slot="block0", seed_id="block0#1", blueprint="conv_wide", params=610),
        SeedGerminated(**base(3, 2), slot="block1", seed_id="block1#1", blueprint="depthwise", params=64),
    ]
    seq = 4
    for epoch in range(1, 5):
        events.append(EpochCompleted(**base(seq, epoch), train_loss=1.0, val_loss=1.0, val_accuracy=90.0,
                                     epoch_time_s=epoch_time, slots=(
            SlotReport(slot="block0", stage="FOSSILIZED" if epoch >= 3 else "PROBATIONARY", blueprint="conv_wide",
                       seed_id="block0#1", alpha=1.0, params=610, epochs_in_stage=epoch),
            SlotReport(slot="block1", stage="BLENDING", blueprint="depthwise", seed_id="block1#1", alpha=0.25 * epoch,
                       params=64, epochs_in_stage=epoch),
            SlotReport(slot="block2", stage="DORMANT", epochs_in_stage=epoch))))
        seq += 1
    return events


def state_of(events: list) -> RunState:
    return apply_all(RunState(), events)


# ---------------------------------------------------------------------------- pure rules
def test_slots_are_listed_in_host_order_with_seed_and_stage():
    lines = network_text(state_of(grown_run())).splitlines()
    assert lines[0] == "cnn host, 3 slots in host order (input to output)"
    rows = [line.split() for line in lines[2:5]]
    assert rows[0][:5] == ["block0", "FOSSILIZED", "conv_wide", "block0#1", "610"]
    assert rows[1][:6] == ["block1", "BLENDING", "depthwise", "block1#1", "64", "1.00"]
    assert rows[2][:6] == ["block2", "DORMANT", "—", "—", "—", "—"]  # empty: nothing, not zeros
    assert "fossilized into the host: block0 (conv_wide)" in lines


def row(text: str, first: str) -> str:
    """The line whose first word is `first`, its columns joined by single spaces."""
    return next(" ".join(line.split()) for line in text.splitlines() if line.split()[:1] == [first])


def test_parameters_say_dash_until_the_log_gives_the_host_size():
    state = state_of(grown_run())
    text = network_text(state)
    assert row(text, "host") == "host — not in this run log (run_started.host_params)"
    assert row(text, "seeds") == "seeds 674 fossilized 610, live 64"
    assert row(text, "budget") == "budget — seeds may total 1.5 × the host's"
    state.host_params = 496  # what run_started.host_params will carry
    p = params_of(state)
    assert (p.host, p.seeds, p.budget) == (496, 674, 744)
    text = network_text(state)
    assert row(text, "host") == "host 496 the seedless network"
    assert row(text, "seeds") == "seeds 674 fossilized 610, live 64, 136% of the host"
    assert row(text, "budget").startswith("budget 744 1.5 × host") and row(text, "budget").endswith("70 left")
    assert row(text, "total") == "total 1,170 host and seeds"


def test_eta_is_the_mean_of_recent_epochs_times_the_epochs_left():
    assert eta_seconds([2.0, 4.0], epoch=4, planned=20) == 3.0 * 16
    assert eta_seconds([9.0] * 5 + [1.0] * 10, epoch=0, planned=2) == 2.0  # only the last 10 count
    assert eta_seconds([0.1], epoch=1, planned=11, min_epoch_seconds=0.5) == 5.0  # a paced epoch waits
    assert eta_seconds([], epoch=1, planned=10) is None and eta_seconds([1.0], epoch=1, planned=None) is None
    assert [fmt_duration(s) for s in (None, 45, 187, 7500)] == ["—", "45s", "3m 07s", "2h 05m"]


def test_progress_says_where_the_run_is_and_when_it_ends():
    text = network_text(state_of(grown_run()))
    assert "epoch 4/20  ████░░░░░░░░░░░░░░░░  20%" in text
    assert "ETA 32s  (2 s/epoch over the last 4)" in text
    paced = network_text(state_of(grown_run(pace=0.5, epoch_time=0.1)))
    assert "ETA 8s  (0.5 s/epoch over the last 4, paced to 0.5 s)" in paced
    state = state_of(grown_run())
    state.status = PAUSED
    assert "ETA 32s of training left (paused)" in network_text(state)


def test_a_finished_run_is_done(steered_events):
    text = network_text(state_of(steered_events))
    assert "epoch 26/26" in text and "100%" in text and "ETA done (finished)" in text
    assert "fossilized into the host: block1 (conv_light)" in text


# ---------------------------------------------------------------------------- in the app
def screen_lines(app: EsperApp) -> list[str]:
    """The top screen as drawn, line by line."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


async def until(pilot, predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)
    return value


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_w_shows_the_whole_network_and_it_fits(size):
    app = EsperApp(StaticSource(grown_run()), refresh=30.0)
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: len(app.dashboard.query(SlotCard)) == 3 and app.state.epoch == 4, "the first draw")
        await pilot.press("w")
        view = app.dashboard.query_one(NetworkView)
        shown = await until(pilot, lambda: "fossilized into" in "\n".join(screen_lines(app)) and "\n".join(screen_lines(app)),
                            "the network view on screen")
        assert "block0  FOSSILIZED  conv_wide  block0#1" in shown
        assert "fossilized into the host: block0 (conv_wide)" in shown
        assert "ETA 32s" in shown and "epoch 4/20" in shown
        # It fits: every line of it on screen, nothing to scroll, the cards out of the way.
        assert all(line.rstrip() in shown for line in view.text.splitlines())
        pane = app.dashboard.query_one("#network-pane")
        assert pane.max_scroll_y == 0 and pane.max_scroll_x == 0
        assert not any(card.region.area for card in app.dashboard.query(SlotCard))
        footer = screen_lines(app)[-1]
        assert "? help" in footer and "q quit" in footer
        await pilot.press("escape")
        await until(pilot, lambda: not app.dashboard.network_shown, "the dashboard again")
        await until(pilot, lambda: all(card.region.area for card in app.dashboard.query(SlotCard)), "the cards again")
        await pilot.press("w")
        await until(pilot, lambda: app.dashboard.network_shown, "the network view again")
        await pilot.press("w")  # w toggles back too
        await until(pilot, lambda: not app.dashboard.network_shown, "w to close it")


@pytest.mark.asyncio
async def test_the_network_view_follows_the_run():
    events = grown_run()
    source = StaticSource(events[:-1])
    app = EsperApp(source, refresh=30.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.state.epoch == 3, "epoch 3")
        await pilot.press("w")
        view = app.dashboard.query_one(NetworkView)
        await until(pilot, lambda: "epoch 3/20" in view.text, "epoch 3 in the view")
        source._events, source._drained = [events[-1], StageChanged(**base(99, 4), slot="block1", seed_id="block1#1",
                                                                    **{"from": "BLENDING", "to": "CULLED"},
                                                                    cause="autopilot")], False
        await until(pilot, lambda: "epoch 4/20" in view.text and "block1  CULLED" in view.text, "the view to follow")
        assert "live 0" in view.text  # a culled seed is no longer counted


@pytest.mark.asyncio
async def test_the_network_view_is_in_the_command_palette():
    from textual.command import CommandList, CommandPalette

    app = EsperApp(StaticSource(grown_run()), refresh=30.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: len(app.dashboard.query(SlotCard)) == 3, "the first draw")
        palette = {str(c.title): str(c.help) for c in app.get_system_commands(app.screen)}
        assert palette["Network view"] == "key: w"
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), "the command palette")
        await pilot.press(*"network")
        commands = app.screen.query_one(CommandList)
        await until(pilot, lambda: any(str(o.prompt).startswith("Network") for o in commands.options), "the entry")
        await pilot.press("enter")
        await until(pilot, lambda: app.dashboard.network_shown, "the network view, from the palette")
