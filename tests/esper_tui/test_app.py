"""The whole dashboard, driven through its keys the way an operator drives it (SPEC §8).

Every test runs the production `EsperApp` under Textual's Pilot: a `StaticSource` (a test double,
tests/esper_tui/static_source.py) over a recorded run log, or a `LiveSource` following a run directory whose "engine" is the test itself: a real
`CommandServer` on the run's control socket receives what the dashboard sends, and the test writes
the engine's answers into the run log with the engine's own writer. One slow test runs the real
engine process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.command import CommandList, CommandPalette
from textual.notifications import Notify
from textual.widgets import Footer, OptionList, Static
from textual.widgets._toast import Toast

from engine.commands import Command, command_to_wire
from engine.control import CommandServer
from engine.telemetry import (
    CommandApplied,
    CommandReceived,
    CommandRejected,
    Emitter,
    EpochCompleted,
    RunLogWriter,
    RunPaused,
    RunStarted,
    SeedGerminated,
    SlotReport,
    StageChanged,
    read_events,
)
from esper_tui.app import EsperApp
from esper_tui.process import EngineProcess
from esper_tui.replay import ReplaySource
from esper_tui.screens import BlueprintPicker, ConfirmScreen, CrashScreen, DashboardScreen, HelpScreen, QuitScreen
from esper_tui.sources import LiveSource, SendResult
from esper_tui.state import Isolation
from esper_tui.status import Status
from esper_tui.widgets import EventLog, GatePanel, RunHeader, SlotCard
from tests.esper_tui.static_source import StaticSource

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

SIZE = (120, 40)
# The app's fastest refresh: the tests wait for draws, never for the 4 Hz default.
REFRESH = 30.0
BLUEPRINTS = {"conv_light": "3x3 depthwise conv with zero-init output", "norm": "GroupNorm with zero-init scale"}


# ---------------------------------------------------------------------------- helpers
class Notes:
    """Every notification the app raises (Pilot hides toasts, so read the Notify messages)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []  # (severity, message)

    def __call__(self, message: Any) -> None:
        if isinstance(message, Notify):
            self.messages.append((message.notification.severity, message.notification.message))

    def texts(self, severity: str | None = None) -> list[str]:
        return [m for s, m in self.messages if severity is None or s == severity]

    def any(self, needle: str) -> bool:
        return any(needle in m for m in self.texts())


async def wait_for(pilot, predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Let the app run (timers, the source's thread) until `predicate()` is true. The timeout only
    bounds a failure: on a loaded 2-core machine a full replay once took more than 5 s to draw."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await pilot.pause(0.02)


def board(app: EsperApp) -> DashboardScreen:
    return app.dashboard


def header(app: EsperApp) -> str:
    return board(app).query_one(RunHeader).text


def cards(app: EsperApp) -> dict[str, str]:
    return {card.slot: card.text for card in board(app).query(SlotCard)}


def gate(app: EsperApp) -> GatePanel:
    return board(app).query_one(GatePanel)


def static_text(widget: Static) -> str:
    return str(widget.content)


async def drawn(pilot, app: EsperApp, *slots: str, timeout: float = 5.0) -> None:
    """Wait for the first full draw: a header and a composed card (more than its name) per slot."""

    def ready() -> bool:
        shown = cards(app)
        return bool(header(app)) and sorted(shown) == sorted(slots) and all("\n" in t for t in shown.values())

    await wait_for(pilot, ready, f"the first draw with cards {slots}", timeout)


class CountingStatic(StaticSource):
    """A StaticSource that records every send (there must be none)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[str] = []

    def send(self, command_name: str, **fields: object) -> SendResult:
        self.sent.append(command_name)
        return super().send(command_name, **fields)


# ---------------------------------------------------------------------------- a finished run (static)
async def test_finished_run_shows_header_cards_gate_and_log(steered_events):
    app = EsperApp(StaticSource(steered_events), refresh=REFRESH)
    async with app.run_test(size=SIZE) as pilot:
        await drawn(pilot, app, "block1", "block2")
        text = header(app)
        assert "FINISHED" in text and "epoch 26/26" in text and "run 100f4031bc2e" in text
        shown = cards(app)
        assert "FOSSILIZED" in shown["block1"] and "conv_light" in shown["block1"]
        assert "SHADOWING" in shown["block2"] and "attention" in shown["block2"]
        # The first slot is selected: its last gate is G5 (passed).
        assert board(app).selected == "block1"
        assert gate(app).border_title == "gate: block1"
        assert gate(app).text.splitlines()[0] == "G5 -> FOSSILIZED  PASSED (epoch 22)"
        lines = board(app).query_one(EventLog).lines
        assert lines[0].startswith("e0 #1 run 100f4031bc2e started")
        assert any("run completed: val accuracy" in line for line in lines)


async def test_keys_select_slots_and_the_gate_panel_follows(steered_events):
    app = EsperApp(StaticSource(steered_events), refresh=REFRESH)
    async with app.run_test(size=SIZE) as pilot:
        await drawn(pilot, app, "block1", "block2")
        for key, slot in [("2", "block2"), ("1", "block1"), ("j", "block2"), ("k", "block1"), ("down", "block2"),
                          ("up", "block1"), ("up", "block2"), ("9", "block2")]:  # up wraps; 9 is no slot: stays
            await pilot.press(key)
            await wait_for(pilot, lambda: gate(app).border_title == f"gate: {slot}", f"{key!r}: the gate of {slot}")
            assert board(app).selected == slot
            assert "-selected" in board(app).query_one(f"#card-{slot}").classes
            other = "block1" if slot == "block2" else "block2"
            assert "-selected" not in board(app).query_one(f"#card-{other}").classes
            first = gate(app).text.splitlines()[0]
            if slot == "block2":  # its last gate failed: G4 kept it in SHADOWING to the end
                assert first == "G4 -> PROBATIONARY  FAILED (epoch 26)"
                assert any(row.startswith("FAIL ") for row in gate(app).text.splitlines()[1:])
            else:
                assert first == "G5 -> FOSSILIZED  PASSED (epoch 22)"


async def test_help_lists_the_keys_and_escape_closes_it(steered_events):
    app = EsperApp(StaticSource(steered_events), refresh=REFRESH)
    async with app.run_test(size=SIZE) as pilot:
        await drawn(pilot, app, "block1", "block2")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen.query("#help-text"),
                       "the help screen, composed")
        text = static_text(app.screen.query_one("#help-text", Static))
        for key, what in [("g", "germinate"), ("A", "force-advance"), ("c", "cull"), ("p", "pause/resume"),
                          ("/", "filter log"), ("t", "theme"), ("?", "help"), ("q", "quit"),
                          ("1-9", "select slot N"), ("down,j", "next slot")]:
            assert any(line.split() == [key, *what.split()] for line in text.splitlines()), (key, text)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the help to close")


async def test_actions_are_reachable_from_the_command_palette(steered_events):
    app = EsperApp(StaticSource(steered_events), refresh=REFRESH)
    async with app.run_test(size=SIZE) as pilot:
        await drawn(pilot, app, "block1", "block2")
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "the command palette")
        await pilot.press(*"help")
        commands = app.screen.query_one(CommandList)
        await wait_for(pilot, lambda: any(str(o.prompt).startswith("Help") for o in commands.options),
                       "the Help command in the palette")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen, from the palette")


async def test_help_and_palette_name_keys_as_typed(steered_events):
    """The help screen and the command palette name each key the way it is typed ("?", "/", "+", "."),
    never by Textual's internal key name ("question_mark", "full_stop", "equals_sign")."""
    app = EsperApp(StaticSource(steered_events), refresh=REFRESH)
    async with app.run_test(size=SIZE) as pilot:
        await drawn(pilot, app, "block1", "block2")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen.query("#help-text"),
                       "the help screen, composed")
        rows = [line.split(None, 1) for line in static_text(app.screen.query_one("#help-text", Static)).splitlines()
                if line.startswith("  ") and len(line.split(None, 1)) == 2]
        keys = {what.strip(): key for key, what in rows}
        assert keys["help"] == "?" and keys["filter log"] == "/"
        internal = {key for key in keys.values() if "_" in key}
        assert not internal, f"the help screen names keys by Textual's internal names: {sorted(internal)}"
        assert "+" in keys["replay: faster"].split(",") and keys["replay: step epoch"] == "."
        assert keys["replay: step event"] == ","
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the help to close")
        palette = {str(c.title): str(c.help) for c in app.get_system_commands(app.screen)}
        assert palette["Help"] == "key: ?", palette["Help"]
        assert palette["Filter log"] == "key: /", palette["Filter log"]
        assert not [h for h in palette.values() if h.startswith("key:") and "_" in h], palette


async def test_t_cycles_the_theme(steered_events):
    app = EsperApp(StaticSource(steered_events), refresh=REFRESH, theme="esper-dark")
    notes = Notes()
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await drawn(pilot, app, "block1", "block2")
        assert app.theme == "esper-dark"
        seen = [app.theme]
        for _ in range(3):
            await pilot.press("t")
            await wait_for(pilot, lambda: app.theme != seen[-1], "a new theme")
            seen.append(app.theme)
        assert len(set(seen[:3])) == 3  # dark, light and high-contrast: three different themes
        assert seen[3] == seen[0]  # ... and round again
        assert notes.any(f"theme: {seen[1]}")


async def test_slash_filters_the_event_log(steered_events):
    app = EsperApp(StaticSource(steered_events), refresh=REFRESH)
    async with app.run_test(size=SIZE) as pilot:
        await drawn(pilot, app, "block1", "block2")
        log = board(app).query_one(EventLog)
        everything = log.lines
        assert any("block1" in line for line in everything) and any("checkpoint saved" in line for line in everything)
        await pilot.press("slash")
        box = board(app).query_one("#filter")
        await wait_for(pilot, lambda: box.display and box.has_focus, "the filter input")
        await pilot.press(*"block2", "enter")
        await wait_for(pilot, lambda: log.filter == "block2", "the filter to apply")
        assert not box.display
        assert log.border_title == "events (filter: block2)"
        filtered = log.lines
        assert filtered and all("block2" in line.lower() for line in filtered)
        assert filtered == [line for line in everything if "block2" in line]
        # `/` again, then Escape, clears it.
        await pilot.press("slash")
        await wait_for(pilot, lambda: box.display and box.has_focus, "the filter input")
        await pilot.press("escape")
        await wait_for(pilot, lambda: log.filter == "", "the filter to clear")
        assert log.lines == everything


async def test_command_keys_on_a_source_that_cannot_command_warn_and_send_nothing(steered_events):
    source = CountingStatic(steered_events)
    app = EsperApp(source, refresh=REFRESH)
    notes = Notes()
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await drawn(pilot, app, "block1", "block2")
        for n, key in enumerate(["g", "a", "f", "p", "n", "o"], 1):
            await pilot.press(key)
            await wait_for(pilot, lambda: len(notes.texts("warning")) >= n, f"a warning for {key!r}")
            assert isinstance(app.screen, DashboardScreen), f"{key!r} opened {app.screen}"  # no blueprint picker
        assert notes.texts() == ["commands are disabled here (replay or finished run)"] * 6
        assert source.sent == []


@pytest.mark.parametrize("key", ["A", "c"])
async def test_confirmed_command_keys_on_a_source_that_cannot_command_warn_without_asking(steered_events, key):
    """Force-advance and cull must not ask "are you sure?" about a run that cannot be steered (a replay,
    a finished run): like germinate, they say at once that commands are disabled."""
    source = CountingStatic(steered_events)
    app = EsperApp(source, refresh=REFRESH)
    notes = Notes()
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await drawn(pilot, app, "block1", "block2")
        await pilot.press(key)
        await wait_for(pilot, lambda: notes.texts("warning") or isinstance(app.screen, ConfirmScreen),
                       f"a warning or a question for {key!r}")
        asked = getattr(app.screen, "question", None)
        if isinstance(app.screen, ConfirmScreen):
            await pilot.press("y")  # answer it, to see what the operator would get
            await pilot.pause(0.05)
        assert source.sent == []
        assert asked is None, f"{key!r} on a finished run asks {asked!r} before saying commands are disabled"
        assert notes.texts("warning") == ["commands are disabled here (replay or finished run)"]


async def test_q_on_a_finished_run_just_exits(steered_events):
    app = EsperApp(StaticSource(steered_events), refresh=REFRESH)
    async with app.run_test(size=SIZE) as pilot:
        await drawn(pilot, app, "block1", "block2")
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, "the app to exit")
    assert app.return_code == 0


# ---------------------------------------------------------------------------- the crash screen
async def test_a_crashed_run_shows_its_traceback_and_quits_with_1(crashed_events):
    app = EsperApp(StaticSource(crashed_events), refresh=REFRESH, run_dir="/tmp/some-run")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, CrashScreen) and app.screen.query("#crash-traceback"),
                       "the crash screen, composed")
        screen = app.screen
        title = static_text(screen.query_one("#crash-title", Static))
        assert title.startswith("CRASHED")
        assert "RuntimeError" in title and "crash requested at epoch 5" in title
        body = static_text(screen.query_one("#crash-traceback", Static))
        assert body.startswith("Traceback (most recent call last):")
        assert 'engine/trainer.py", line 156, in run' in body
        assert "RuntimeError: fault drill: crash requested at epoch 5" in body
        assert "/tmp/some-run/events.jsonl" in static_text(screen.query_one("#crash-where", Static))
        assert app.exit_code == 1
        assert "CRASHED" in header(app)
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, "the app to exit")
    assert app.return_code == 1


# ---------------------------------------------------------------------------- live, with a fake engine
class FakeEngine:
    """The engine's side of a run directory: a real control socket and a run log the test writes."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.writer = RunLogWriter(run_dir / "events.jsonl")
        self.emitter = Emitter(self.writer)
        self.server = CommandServer(run_dir).start()
        self.received: list[Command] = []

    def start_run(self, *, autopilot: bool = True) -> None:
        self.emitter.emit(RunStarted, run_id="fake01", config={"autopilot": autopilot}, task="digits",
                          topology="cnn", slots=("block1", "block2"), isolation={"blend_detach": True,
                          "source": "default"}, device="cpu", planned_epochs=10, blueprints=BLUEPRINTS)
        self.emitter.epoch = 1
        self.emitter.emit(EpochCompleted, train_loss=1.0, val_loss=1.1, train_accuracy=60.0, val_accuracy=58.0,
                          slots=(SlotReport(slot="block1", stage="DORMANT"), SlotReport(slot="block2", stage="DORMANT")))
        self.writer.flush()

    def seed(self, slot: str, stage: str, blueprint: str = "conv_light") -> None:
        """Put a seed into `slot`, already in `stage` (as if the run had grown it earlier)."""
        self.emitter.emit(SeedGerminated, slot=slot, seed_id=f"{slot}#1", blueprint=blueprint, params=120)
        self.emitter.emit(StageChanged, slot=slot, seed_id=f"{slot}#1", blueprint=blueprint,
                          **{"from": "DORMANT", "to": stage}, cause="autopilot", reason="grown earlier")
        self.writer.flush()

    def move(self, slot: str, frm: str, to: str, cause: str, reason: str = "", *, forced: bool = False) -> None:
        """A stage change of `slot` at the current epoch, decided by `cause`."""
        self.emitter.emit(StageChanged, slot=slot, seed_id=f"{slot}#1", **{"from": frm, "to": to}, cause=cause,
                          reason=reason, forced=forced)
        self.writer.flush()

    def next_epoch(self) -> None:
        """End the current epoch and start the next (both slots' stages as the app last saw them)."""
        self.emitter.epoch += 1
        self.emitter.emit(EpochCompleted, train_loss=1.0, val_loss=1.1, train_accuracy=60.0, val_accuracy=58.0,
                          epoch_time_s=2.0)
        self.writer.flush()

    def take(self) -> list[Command]:
        """The commands received since the last call."""
        got = self.server.drain()
        self.received += got
        return got

    def answer(self, cmd: Command, reason: str | None = None) -> None:
        """Write the engine's answer: applied, or rejected with `reason`."""
        wire = command_to_wire(cmd)
        self.emitter.emit(CommandReceived, command_id=cmd.id, command=wire)
        if reason is None:
            self.emitter.emit(CommandApplied, command_id=cmd.id, command=wire)
        else:
            self.emitter.emit(CommandRejected, command_id=cmd.id, command=wire, reason=reason)

    def close(self) -> None:
        self.server.close()
        self.writer.close()


@pytest.fixture
def engine(run_dir):
    fake = FakeEngine(run_dir)
    fake.start_run()
    yield fake
    fake.close()


def live_app(run_dir: Path) -> EsperApp:
    return EsperApp(LiveSource(run_dir), refresh=REFRESH, run_dir=str(run_dir))


async def received(pilot, engine: FakeEngine, what: str, n: int = 1) -> list[Command]:
    """Wait for `n` commands at the fake engine's socket; no more may arrive."""
    got: list[Command] = []
    await wait_for(pilot, lambda: got.extend(engine.take()) or len(got) >= n, what)
    await pilot.pause(0.05)
    got += engine.take()
    assert len(got) == n, got
    return got


async def nothing_sent(pilot, engine: FakeEngine) -> None:
    # Commands leave from the app's sender thread within a poll interval (0.1 s) and one local round
    # trip: after a few of those, anything sent would be queued at the server.
    await pilot.pause(0.4)
    assert engine.take() == []


async def live_drawn(pilot, app: EsperApp) -> None:
    await drawn(pilot, app, "block1", "block2")
    await wait_for(pilot, lambda: "LIVE" in header(app) and "epoch 1/10" in header(app), "a LIVE header")


async def test_germinate_picks_a_blueprint_sends_it_and_shows_the_answer(engine, run_dir):
    app = live_app(run_dir)
    notes = Notes()
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await live_drawn(pilot, app)
        # Escape in the picker sends nothing.
        await pilot.press("g")
        await wait_for(pilot, lambda: isinstance(app.screen, BlueprintPicker), "the picker")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the picker to close")
        await nothing_sent(pilot, engine)

        await pilot.press("2")  # block2
        await wait_for(pilot, lambda: board(app).selected == "block2", "block2 selected")
        await pilot.press("g")
        picker = await wait_for(pilot, lambda: isinstance(app.screen, BlueprintPicker) and app.screen, "the picker")
        assert picker.slot == "block2"
        options = picker.query_one(OptionList)
        assert [options.get_option_at_index(i).id for i in range(options.option_count)] == list(BLUEPRINTS)
        for _ in range(options.option_count + 1):  # down to "norm" (the second), wherever the cursor starts
            if options.highlighted_option is not None and options.highlighted_option.id == "norm":
                break
            await pilot.press("down")
        assert options.highlighted_option.id == "norm"
        await pilot.press("enter")
        (cmd,) = await received(pilot, engine, "the germinate command")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the picker to close")
        assert cmd.command == "germinate" and cmd.slot == "block2" and cmd.blueprint == "norm"
        assert cmd.id and len(cmd.id) >= 8
        # Until the engine answers, the event log (where the answer will appear) says so on its border;
        # no toast says "sent": the one toast per command is the engine's answer.
        log = board(app).query_one(EventLog)
        await wait_for(pilot, lambda: str(log.border_subtitle) == "awaiting the engine: germinate block2 norm",
                       "the waiting line")
        assert notes.texts() == []
        engine.answer(cmd)
        await wait_for(pilot, lambda: notes.any("germinate block2 norm: applied"), "the applied notification")
        assert any("germinate" in line and "applied" in line for line in log.lines)
        await wait_for(pilot, lambda: not log.border_subtitle, "the waiting line to go")
        await pilot.pause(0.2)
        assert notes.texts() == ["germinate block2 norm: applied"]


async def test_an_answer_is_drawn_with_its_notification_even_when_frames_are_skipped(engine, run_dir, monkeypatch):
    """A busy UI skips frames (CPU_BUDGET) for up to MAX_STALE; the frame that brings an engine's answer
    is never one of them: the event log shows the answer when its notification does, not a second later."""
    import esper_tui.app as app_module

    app = live_app(run_dir)
    notes = Notes()
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await live_drawn(pilot, app)
        await pilot.press("p")
        (cmd,) = await received(pilot, engine, "pause")
        monkeypatch.setattr(app_module, "CPU_BUDGET", -1.0)  # from now on every frame is over budget ...
        monkeypatch.setattr(app_module, "MAX_STALE", 3600.0)  # ... and may go stale for an hour
        engine.answer(cmd)
        await wait_for(pilot, lambda: notes.any("pause: applied"), "the applied notification")
        assert any("pause" in line and "applied" in line for line in board(app).query_one(EventLog).lines)


async def grown(pilot, app: EsperApp, engine: FakeEngine, **stages: str) -> None:
    """Give the fake run's slots seeds in these stages, and wait for the cards to show them."""
    for slot, stage in stages.items():
        engine.seed(slot, stage)
    await wait_for(pilot, lambda: all(stage in cards(app)[slot] for slot, stage in stages.items()), f"seeds {stages}")


async def test_force_advance_asks_first_and_shows_the_rejection(engine, run_dir):
    app = live_app(run_dir)
    notes = Notes()
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await live_drawn(pilot, app)
        await grown(pilot, app, engine, block1="TRAINING")
        await pilot.press("A")
        confirm = await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen, "the confirm")
        assert "Force block1 past its failing gate?" in confirm.question
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the confirm to close")
        await nothing_sent(pilot, engine)

        await pilot.press("A")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirm")
        await pilot.press("y")
        (cmd,) = await received(pilot, engine, "the force_advance command")
        assert cmd.command == "force_advance" and cmd.slot == "block1"
        engine.answer(cmd, reason="G2 failed twice: the engine refuses a second bypass")
        await wait_for(pilot, lambda: notes.any("rejected: G2"), "the rejection notification")
        assert notes.texts() == ["force_advance block1: rejected: G2 failed twice: the engine refuses a second bypass"]
        assert notes.texts("error") == notes.texts()


async def test_advance_fossilize_and_cull_go_to_the_selected_slot(engine, run_dir):
    app = live_app(run_dir)
    notes = Notes()
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await live_drawn(pilot, app)
        await grown(pilot, app, engine, block1="TRAINING", block2="PROBATIONARY")
        await pilot.press("a")
        (cmd,) = await received(pilot, engine, "advance")
        assert (cmd.command, cmd.slot) == ("advance", "block1")
        await pilot.press("j", "f")
        (cmd,) = await received(pilot, engine, "fossilize")
        assert (cmd.command, cmd.slot) == ("fossilize", "block2")
        await pilot.press("k")
        await wait_for(pilot, lambda: board(app).selected == "block1", "block1 selected")
        await pilot.press("c")
        confirm = await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen, "the confirm")
        assert "Cull the seed in block1?" in confirm.question
        await pilot.press("y")
        (cmd,) = await received(pilot, engine, "the cull command")
        assert cmd.command == "cull" and cmd.slot == "block1" and cmd.reason
        engine.answer(cmd)
        await wait_for(pilot, lambda: any(m.endswith(": applied") and "cull" in m for m in notes.texts()), "applied")


async def test_pause_then_resume_step_and_autopilot(engine, run_dir):
    app = live_app(run_dir)
    notes = Notes()
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await live_drawn(pilot, app)
        assert "autopilot on" in header(app)
        await pilot.press("p")
        (cmd,) = await received(pilot, engine, "pause")
        assert cmd.command == "pause"
        engine.answer(cmd)
        engine.emitter.emit(RunPaused, cause="operator")
        await wait_for(pilot, lambda: "PAUSED" in header(app), "a PAUSED header")
        await wait_for(pilot, lambda: notes.any("pause: applied"), "the applied notification")

        await pilot.press("n")
        (cmd,) = await received(pilot, engine, "step_epoch")
        assert cmd.command == "step_epoch"

        await pilot.press("o")
        (cmd,) = await received(pilot, engine, "autopilot")
        assert cmd.command == "autopilot" and cmd.enabled is False
        engine.answer(cmd)
        await wait_for(pilot, lambda: "autopilot off" in header(app), "autopilot off in the header")
        await wait_for(pilot, lambda: notes.any("autopilot off: applied"), "the applied notification")

        await pilot.press("p")
        (cmd,) = await received(pilot, engine, "resume")
        assert cmd.command == "resume"


async def test_q_asks_and_escape_stays_then_detach_leaves_the_run_alone(engine, run_dir):
    app = live_app(run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await live_drawn(pilot, app)
        await pilot.press("q")
        quit_screen = await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen) and app.screen, "the quit dialog")
        assert quit_screen.run_dir == str(run_dir)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the quit dialog to close")
        await pilot.pause(0.1)
        assert app.is_running

        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen), "the quit dialog")
        await pilot.press("d")
        await wait_for(pilot, lambda: not app.is_running, "the app to exit")
    assert app.return_code == 0
    assert engine.take() == []  # detach sends nothing: the run goes on
    assert engine.server.running


async def test_ctrl_q_on_a_live_run_also_asks_stop_or_detach(engine, run_dir):
    """SPEC §8: quitting asks whether to stop the run or detach. Textual's own quit (ctrl+q, and the
    palette's built-in "Quit") must take the same path as `q`, not leave silently."""
    app = live_app(run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await live_drawn(pilot, app)
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen) or not app.is_running, "an answer to ctrl+q")
        assert app.is_running, "ctrl+q left a live run without asking (and without the re-attach hint)"
        assert isinstance(app.screen, QuitScreen)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "the quit dialog to close")
    assert engine.take() == []


async def test_q_then_s_stops_the_run_and_exits(engine, run_dir):
    app = live_app(run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await live_drawn(pilot, app)
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen), "the quit dialog")
        await pilot.press("s")
        await wait_for(pilot, lambda: not app.is_running, "the app to exit")
    assert app.return_code == 0
    cmds = engine.take()
    assert [c.command for c in cmds] == ["stop"] and cmds[0].id


# ---------------------------------------------------------------------------- the real engine (slow)
@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_real_engine_germinate_from_the_dashboard_then_stop(run_dir):
    run = run_dir / "r"
    proc = EngineProcess.start(run, ["--preset", "quick", "--epochs", "40", "--set", "min_epoch_seconds=0.2",
                                     "--no-autopilot"])
    try:
        app = EsperApp(LiveSource(run, process=proc), refresh=REFRESH, run_dir=str(run))
        notes = Notes()
        async with app.run_test(size=SIZE, message_hook=notes) as pilot:
            await wait_for(pilot, lambda: app.state.slots, "the engine's run_started", timeout=60)
            await drawn(pilot, app, *app.state.slots, timeout=30)
            assert "LIVE" in header(app) and "autopilot off" in header(app)
            assert board(app).selected == "block0"
            assert "DORMANT" in cards(app)["block0"]
            await pilot.press("g")
            picker = await wait_for(pilot, lambda: isinstance(app.screen, BlueprintPicker) and app.screen, "picker")
            options = picker.query_one(OptionList)
            for _ in range(options.option_count + 1):
                if options.highlighted_option is not None and options.highlighted_option.id == "conv_light":
                    break
                await pilot.press("down")
            await pilot.press("enter")
            await wait_for(pilot, lambda: notes.any("germinate block0 conv_light: applied"), "applied", timeout=30)
            await wait_for(pilot, lambda: "GERMINATED" in cards(app)["block0"], "block0 GERMINATED", timeout=30)
            assert "conv_light" in cards(app)["block0"]
            assert app.state.slots["block0"].stage == "GERMINATED"
            await pilot.press("q")
            await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen), "the quit dialog")
            await pilot.press("s")
            await wait_for(pilot, lambda: not app.is_running, "the app to exit")
        assert app.return_code == 0
        assert proc.wait(timeout=60) == 0
        events = read_events(run).events
        assert events[-1].kind == "run_finished" and events[-1].status == "stopped"
        assert any(e.kind == "command_applied" and e.command.get("command") == "stop" for e in events)
    finally:
        proc.kill()



async def test_frames_are_skipped_over_the_cpu_budget_but_never_go_stale(monkeypatch):
    """The UI gives the CPU back to training: a busy frame skips the next one, for at most MAX_STALE."""
    import esper_tui.app as app_module
    from esper_tui.app import CPU_BUDGET, MAX_STALE, EsperApp

    clock = {"wall": 100.0, "cpu": 10.0}
    monkeypatch.setattr(app_module.time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(app_module.time, "process_time", lambda: clock["cpu"])
    app = EsperApp(StaticSource([]))
    app._drawn_at, app._drawn_status = 100.0, None

    def tick(wall: float, cpu: float) -> bool:
        clock["wall"] += wall
        clock["cpu"] += cpu
        return app._over_budget(None)

    assert not tick(0.25, 0.25 * CPU_BUDGET / 2)  # a light frame: draw
    assert tick(0.25, 0.25 * CPU_BUDGET * 4)  # the UI was busy: skip this frame
    clock["wall"] = app._drawn_at + MAX_STALE + 0.01
    assert not tick(0.0, 10.0)  # however busy, the screen is never older than MAX_STALE
    app._drawn_at = clock["wall"]
    assert not app._over_budget("PAUSED")  # a status change always draws


# ---------------------------------------------------------------------------- what the operator is told
def toasts(app: EsperApp) -> list[Toast]:
    return list(app.screen.query(Toast))


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_one_toast_per_command_and_it_hides_neither_log_nor_cards(engine, run_dir, size):
    """A command used to raise two toasts ("sent", then "applied") over the event log that shows the
    answer. Now: one toast, the engine's answer, over the bottom of the gate panel."""
    app = live_app(run_dir)
    notes = Notes()
    async with app.run_test(size=size, message_hook=notes, notifications=True) as pilot:
        await live_drawn(pilot, app)
        await pilot.press("p")
        (cmd,) = await received(pilot, engine, "pause")
        await pilot.pause(0.2)
        assert toasts(app) == []  # sending and waiting show on the log's border, not as a toast
        reason = "the run is already paused by its schedule; resume it first, then pause again"
        engine.answer(cmd, reason=reason)
        (toast,) = await wait_for(pilot, lambda: toasts(app), "the answer's toast")
        await wait_for(pilot, lambda: toast.region.area, "the toast laid out")
        await pilot.pause(0.3)
        assert notes.texts() == [f"pause: rejected: {reason}"]
        log, gates = board(app).query_one(EventLog), gate(app)
        assert not toast.region.overlaps(log.region), (toast.region, log.region)
        assert not any(toast.region.overlaps(card.region) for card in board(app).query(SlotCard))
        assert gates.region.x <= toast.region.x and toast.region.right <= gates.region.right
        # Wrapped over several lines, all of it is above the footer.
        assert toast.region.height >= 3 and toast.region.bottom <= board(app).query_one(Footer).region.y
        rows = [strip.text for strip in app.screen._compositor.render_strips()][toast.region.y:toast.region.bottom]
        words = " ".join(row[toast.region.x:toast.region.right].strip("▌ ") for row in rows).split()
        assert words == f"pause: rejected: {reason}".split()  # every word on screen, the last one too


async def test_the_engine_moving_the_slot_right_after_a_command_gets_its_own_toast(engine, run_dir):
    """A forced advance, then the timeout culls the seed in the next epoch: the operator is told that
    the engine acted on its own, once. Moves of other slots, the embargo that ends a cull, and moves
    two epochs later are not news."""
    app = live_app(run_dir)
    notes = Notes()
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await live_drawn(pilot, app)
        await grown(pilot, app, engine, block1="SHADOWING", block2="TRAINING")
        await pilot.press("A")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirm")
        await pilot.press("y")
        (cmd,) = await received(pilot, engine, "force_advance")
        engine.answer(cmd)
        engine.move("block1", "SHADOWING", "PROBATIONARY", "operator", "forced past G4", forced=True)
        await wait_for(pilot, lambda: notes.any("force_advance block1: applied"), "the answer")
        engine.next_epoch()  # epoch 2: the epoch after the command
        engine.move("block2", "TRAINING", "BLENDING", "gate", "G2 passed")  # another slot: not news
        engine.move("block1", "PROBATIONARY", "CULLED", "timeout", "probation ran out")
        follow = "after force_advance block1, on its own: block1 PROBATIONARY -> CULLED (timeout): probation ran out"
        await wait_for(pilot, lambda: notes.any(follow), "the follow-up toast")
        engine.next_epoch()
        engine.move("block1", "CULLED", "EMBARGOED", "embargo", "embargoed")
        engine.next_epoch()  # epoch 4: out of the window
        engine.move("block2", "BLENDING", "CULLED", "autopilot", "accuracy fell")
        await wait_for(pilot, lambda: "CULLED" in cards(app)["block2"], "the later moves drawn")
        await pilot.pause(0.3)
        assert notes.texts() == ["force_advance block1: applied", follow]
        assert notes.messages[1][0] == "warning"


@pytest.mark.parametrize(("key", "verb"), [("c", "cull"), ("a", "advance"), ("A", "advance"), ("f", "fossilize")])
async def test_a_seed_command_on_an_empty_slot_says_so_and_asks_nothing(engine, run_dir, key, verb):
    app = live_app(run_dir)
    notes = Notes()
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await live_drawn(pilot, app)
        await pilot.press(key)
        await wait_for(pilot, lambda: notes.texts() or isinstance(app.screen, ConfirmScreen), f"an answer to {key!r}")
        assert isinstance(app.screen, DashboardScreen), f"{key!r} on an empty slot asked {app.screen}"
        assert notes.texts("warning") == [f"block1 holds no seed: nothing to {verb}"]
        await nothing_sent(pilot, engine)


class SlowSocket(LiveSource):
    """A live source whose socket takes a while to answer (a busy engine, a slow disk)."""

    def __init__(self, run_dir: Path, delay: float) -> None:
        super().__init__(run_dir)
        self.delay = delay
        self.send_threads: list[str] = []

    def send(self, command_name: str, **fields: object) -> SendResult:
        import threading

        self.send_threads.append(threading.current_thread().name)
        time.sleep(self.delay)
        return super().send(command_name, **fields)


async def test_sending_never_blocks_the_screen(engine, run_dir):
    """`source.send` may block up to its timeout (2 s): it runs in a worker thread, and the keys and
    the screen go on meanwhile; the "sending" state shows on the event log's border."""
    source = SlowSocket(run_dir, delay=1.5)
    app = EsperApp(source, refresh=REFRESH, run_dir=str(run_dir))
    notes = Notes()
    async with app.run_test(size=SIZE, message_hook=notes) as pilot:
        await live_drawn(pilot, app)
        log = board(app).query_one(EventLog)
        pressed = time.monotonic()
        await pilot.press("p")
        await wait_for(pilot, lambda: str(log.border_subtitle) == "sending pause…", "the sending line", timeout=1.0)
        await pilot.press("2")
        await wait_for(pilot, lambda: gate(app).border_title == "gate: block2", "the selection to move", timeout=1.0)
        assert time.monotonic() - pressed < 1.2  # well before the socket answered
        (cmd,) = await received(pilot, engine, "pause")
        assert source.send_threads and "MainThread" not in source.send_threads
        await wait_for(pilot, lambda: str(log.border_subtitle) == "awaiting the engine: pause", "the waiting line")
        engine.answer(cmd)
        await wait_for(pilot, lambda: notes.any("pause: applied"), "the answer")


async def test_commands_leave_in_the_order_asked(engine, run_dir):
    """One sender, one command at a time: a step_epoch never overtakes the pause before it."""
    app = live_app(run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await live_drawn(pilot, app)
        await pilot.press("p", "n", "o")
        cmds = await received(pilot, engine, "three commands", n=3)
        assert [c.command for c in cmds] == ["pause", "step_epoch", "autopilot"]


async def test_a_replays_status_is_a_typed_value_not_a_string_to_split():
    source = ReplaySource(Path(__file__).resolve().parents[1] / "fixtures" / "steered-run.jsonl", speed=2)
    app = EsperApp(source, refresh=REFRESH)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "REPLAY x2" in header(app), "the replay header")
        assert app.status_override() == Status("REPLAY", "x2")
        assert board(app).query_one(RunHeader).has_class("status-REPLAY")
        await pilot.press("space")
        await wait_for(pilot, lambda: "REPLAY PAUSED" in header(app), "paused")
        assert app.status_override() == Status("REPLAY", "PAUSED")
        await pilot.press("end")
        # At the end the header says how the run ended, not "REPLAY END", and counts to its real last epoch.
        await wait_for(pilot, lambda: "FINISHED (replay)" in header(app), "at the end")
        assert app.status_override() == Status("FINISHED", "(replay)")
        assert "epoch 26/26" in header(app)
        assert app.state.isolation == Isolation(detach=True, source="default")


def footer_text(app: EsperApp) -> str:
    return [strip.text for strip in app.screen._compositor.render_strips()][-1]


STEERED_LOG = Path(__file__).resolve().parents[1] / "fixtures" / "steered-run.jsonl"


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_a_replay_footer_offers_the_replay_keys_and_hides_the_operators(size):
    app = EsperApp(ReplaySource(STEERED_LOG, speed=2), refresh=REFRESH)
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: "play/pause" in footer_text(app) and len(board(app).query(SlotCard)) == 2,
                       "the replay keys in the footer")
        footer = footer_text(app)
        for shown in ("space play/pause", "+ faster", "- slower", ". step epoch", "e seek epoch", "? help", "q quit"):
            assert shown in footer, (shown, footer)
        assert len(footer.rstrip()) <= size[0]
        for hidden in ("germinate", "advance", "cull", "pause/resume"):
            assert hidden not in footer, (hidden, footer)
        await pilot.press("g")  # a command key does nothing in a replay: no picker, no toast
        await pilot.pause(0.1)
        assert not isinstance(app.screen, BlueprintPicker) and isinstance(app.screen, DashboardScreen)


async def test_a_live_footer_hides_the_replay_keys(steered_events):
    app = EsperApp(StaticSource(steered_events), refresh=REFRESH)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: "germinate" in footer_text(app), "the operator's keys")
        assert "play/pause" not in footer_text(app) and "faster" not in footer_text(app)


async def test_home_shows_the_run_as_it_started_and_comma_steps_one_event():
    source = ReplaySource(STEERED_LOG, speed=0)
    app = EsperApp(source, refresh=REFRESH)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: source.at_end and "FINISHED (replay)" in header(app), "the end")
        await pilot.press("space")  # paused: at full speed, playing on would be back at the end at once
        await pilot.press("home")
        await wait_for(pilot, lambda: "epoch 0/26" in header(app), "the start")
        # Not a blank screen: the run's slots are drawn, each card as it was at the start.
        cards = {c.slot: c for c in board(app).query(SlotCard)}
        assert set(cards) == {"block1", "block2"} and all("DORMANT" in c.text for c in cards.values())
        sent = source._sent
        await pilot.press("comma")
        await wait_for(pilot, lambda: source._sent == sent + 1, "one more event")
        assert "REPLAY PAUSED" in header(app)
        await pilot.press("full_stop")  # the rest of epoch 1
        await wait_for(pilot, lambda: "epoch 1/26" in header(app), "epoch 1")


async def test_capital_f_in_a_replay_leaves_it_to_fork_a_live_run_at_the_epoch_on_screen():
    source = ReplaySource(STEERED_LOG, speed=0)
    app = EsperApp(source, refresh=REFRESH)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: source.at_end and "epoch 26/26" in header(app), "the end")
        await pilot.press("space", "home")
        await wait_for(pilot, lambda: "epoch 0/26" in header(app), "the start")
        await pilot.press("F")  # epoch 0: nothing to fork from yet
        await pilot.pause(0.1)
        assert app.is_running and app.fork_epoch is None
        await pilot.press("e")
        await pilot.press(*"12", "enter")
        await wait_for(pilot, lambda: "epoch 12/26" in header(app), "epoch 12")
        await pilot.press("F")
        await pilot.pause(0.1)
    assert app.fork_epoch == 12


async def test_capital_f_does_nothing_live(steered_events):
    app = EsperApp(StaticSource(steered_events), refresh=REFRESH)
    async with app.run_test(size=(120, 40)) as pilot:
        await drawn(pilot, app, "block1", "block2")
        await pilot.press("F")
        await pilot.pause(0.1)
        assert app.is_running and app.fork_epoch is None


async def test_a_wrapped_toast_is_whole_above_the_footer(steered_events):
    """Textual sized the toast rack by text wrapped one column wider than drawn (its scrollbar gutter):
    a toast that wraps once more than estimated lost its last line under the footer."""
    app = EsperApp(StaticSource(steered_events), refresh=REFRESH)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await drawn(pilot, app, "block1", "block2")
        message = "after germinate block1 norm, on its own: block1 GERMINATED -> TRAINING (gate): G1 passed"
        app.notify(message)
        (toast,) = await wait_for(pilot, lambda: toasts(app), "the toast")
        await wait_for(pilot, lambda: toast.region.area, "the toast laid out")
        await pilot.pause(0.1)
        assert toast.region.bottom <= board(app).query_one(Footer).region.y
        rows = [strip.text for strip in app.screen._compositor.render_strips()][toast.region.y:toast.region.bottom]
        assert " ".join(row[toast.region.x:toast.region.right].strip("▌ ") for row in rows).split() == message.split()
