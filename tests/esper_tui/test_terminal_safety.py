"""Strings from a run log or the socket are shown as text (SPEC §8 security), through the whole dashboard.

A crafted log puts window-title OSC sequences, an OSC 52 clipboard write, a screen clear, the 8-bit
CSI (U+009B) and Textual markup (including a clickable `@click` action) into every string field it
can. Replayed, attached, crashed or answered, the screen must show them as visible escapes and
literal brackets: no raw control character in what is drawn, no markup interpreted, no crash.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from textual.notifications import Notify

from engine.gates import GateCheck
from engine.telemetry import (
    CheckpointSaved,
    CommandReceived,
    CommandRejected,
    ControllerDecision,
    Emitter,
    EpochCompleted,
    GateEvaluated,
    RunFailed,
    RunLogWriter,
    RunStarted,
    SeedGerminated,
    SlotReport,
    StageChanged,
    WarningEvent,
)
from esper_tui.app import EsperApp
from esper_tui.replay import ReplaySource
from esper_tui.screens import BlueprintPicker, ConfirmScreen, CrashScreen
from esper_tui.sources import LiveSource
from esper_tui.widgets import EventLog, SlotCard
from tests.esper_tui.static_source import StaticSource
from tests.esper_tui.test_app import REFRESH, FakeEngine, Notes, received, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

SIZE = (160, 50)
OSC_TITLE = "\x1b]0;pwned\x07"
OSC_52 = "\x1b]52;c;ZWNobyBwd25lZA==\x07"
CLEAR = "\x1b[2J"
C1_CSI = "\x9b2J"
MARKUP = "[red]r[/red][@click=app.quit]q[/][/x]"  # styled, clickable, and a stray closing tag
EVIL = f"<{OSC_TITLE}{OSC_52}{CLEAR}{C1_CSI}{MARKUP}>"
EVIL_SLOT = f"evil{CLEAR}[/b]"
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def screen_text(app: EsperApp) -> str:
    """Every character of the top screen as drawn (what reaches the terminal, less Textual's own codes)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def assert_shown_as_text(text: str) -> None:
    assert not RAW.findall(text), sorted(set(RAW.findall(text)))
    assert "\\x1b" in text  # the escapes are written out, not silently dropped


def crafted_log(run_dir: Path, *, fail: bool = False) -> Path:
    """A run log whose every string field carries EVIL, written by the engine's own writer (which
    JSON-escapes C0 and writes DEL and C1 raw), plus hand-written lines with \\u009b escapes."""
    path = run_dir / "events.jsonl"
    with RunLogWriter(path) as writer:
        emit = Emitter(writer).emit
        emit(RunStarted, run_id="r1", config={"autopilot": True, "note": EVIL}, task=f"digits{OSC_TITLE}",
             topology="cnn", slots=("block1", EVIL_SLOT), isolation={"blend_detach": True, "source": EVIL},
             device=f"cpu{CLEAR}", planned_epochs=4, blueprints={f"bp{OSC_52}": EVIL})
        emit(SeedGerminated, slot="block1", seed_id=f"s{C1_CSI}", blueprint=EVIL, params=10)
        emit(StageChanged, slot="block1", from_stage="DORMANT", to_stage="GERMINATED", cause="operator", reason=EVIL)
        emit(GateEvaluated, slot="block1", gate="G2", target="BLENDING", passed=False,
             checks=(GateCheck(name=EVIL, value=EVIL, threshold=0.05, passed=False),))
        emit(WarningEvent, slot="block1", code=f"w{OSC_TITLE}", message=EVIL)
        emit(ControllerDecision, action="germinate", slot="block1", blueprint=EVIL, reason=EVIL)
        emit(CommandReceived, command_id="c1", command={"command": "cull", "slot": "block1", "reason": EVIL})
        emit(CommandRejected, command_id="c1", command={"command": "cull", "slot": "block1", "reason": EVIL},
             reason=EVIL)
        emit(CheckpointSaved, path=f"/tmp/{EVIL}")
        emit(EpochCompleted, train_loss=1.0, val_loss=1.0, val_accuracy=50.0,
             slots=(SlotReport(slot="block1", stage="TRAINING", blueprint=EVIL, seed_id="s1", grad_ratio=0.1,
                               grad_ratio_threshold=0.05),
                    SlotReport(slot=EVIL_SLOT, stage="DORMANT")))
        if fail:
            emit(RunFailed, error_type=f"Err{OSC_TITLE}", message=EVIL,
                 traceback=f"Traceback (most recent call last):\n  File {OSC_52}\n{CLEAR}{C1_CSI}{MARKUP}\n")
    with open(path, "ab") as f:  # the other spellings of C1: a JSON escape, and DEL raw
        f.write(b'{"kind":"warning","seq":90,"time":0,"epoch":1,"step":0,"code":"x",'
                b'"message":"esc \\u001b]0;t\\u0007 c1 \\u009b2J del \x7f end"}\n')
    return path


async def test_a_crafted_log_replays_as_plain_text(run_dir):
    app = EsperApp(ReplaySource(crafted_log(run_dir), speed=0), refresh=REFRESH)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.state.log and app.state.log[-1].seq == 90, "the whole log")
        await wait_for(pilot, lambda: any("esc " in line for line in app.dashboard.query_one(EventLog).lines),
                       "the last line in the event log")
        await wait_for(pilot, lambda: "c1 \\x9b2J del \\x7f end" in screen_text(app), "the last line drawn")
        text = screen_text(app)
        assert_shown_as_text(text)
        assert "[red]r[/red]" in text  # markup is shown, not applied
        for slot in ("block1", "evil\\x1b[2J[/b]"):
            card = next(c for c in app.dashboard.query(SlotCard) if c.slot == slot)
            assert not RAW.findall(card.text)
        await pilot.press("2")  # the evil slot: its card and gate panel
        await wait_for(pilot, lambda: "gate: evil\\x1b[2J[/b]" in screen_text(app), "the evil slot's gate panel")
        assert not RAW.findall(screen_text(app))
        await pilot.press("1")
        await wait_for(pilot, lambda: "G2 -> BLENDING  FAILED" in screen_text(app), "block1's gate panel")
        assert not RAW.findall(screen_text(app))
        assert app.is_running  # nothing (a stray "[/x]" included) crashed it


async def test_a_crafted_crash_shows_its_traceback_as_text(run_dir):
    app = EsperApp(ReplaySource(crafted_log(run_dir, fail=True), speed=0), refresh=REFRESH)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, CrashScreen), "the crash screen")
        await wait_for(pilot, lambda: "Traceback" in screen_text(app), "the traceback drawn")
        text = screen_text(app)
        assert_shown_as_text(text)
        assert "Traceback (most recent call last):" in text and MARKUP in text
        assert "CRASHED  Err\\x1b]0;pwned\\x07: " in text


class DeadEngine(StaticSource):
    """An engine that died without run_failed, leaving a crafted stderr (e.g. a library's own output)."""

    def __init__(self, stderr: str) -> None:
        super().__init__([], status="CRASHED")
        self._stderr = stderr

    @property
    def exit_code(self) -> int | None:
        return 1

    def stderr_tail(self) -> str:
        return self._stderr


async def test_the_stderr_tail_of_a_dead_engine_is_shown_as_text():
    stderr = f"Fatal Python error: {OSC_TITLE}\n{OSC_52}{CLEAR}\r{C1_CSI} {MARKUP}\n\tdone\n"
    app = EsperApp(DeadEngine(stderr), refresh=REFRESH)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, CrashScreen), "the crash screen")
        await wait_for(pilot, lambda: "Fatal Python error" in screen_text(app), "the stderr drawn")
        text = screen_text(app)
        assert_shown_as_text(text)
        assert "Fatal Python error: \\x1b]0;pwned\\x07" in text and MARKUP in text and "\\r" in text


async def test_names_and_answers_from_the_engine_are_never_markup(run_dir):
    """Blueprint and slot names reach the picker, the confirm question and the card titles; a rejection's
    reason reaches a notification. None may be read as markup (a `[@click=...]` there is an action)."""
    engine = FakeEngine(run_dir)
    slot = "[b]s1[/b]"
    bp = "[red]bp[/red]"
    engine.emitter.emit(RunStarted, run_id="m1", config={"autopilot": True}, task="digits", topology="cnn",
                        slots=(slot, "block2"), isolation={}, device="cpu", planned_epochs=10,
                        blueprints={bp: "[@click=app.quit]desc[/]"})
    engine.emitter.epoch = 1
    # The slot holds a seed: `c` on an empty slot says so at once instead of asking.
    engine.emitter.emit(EpochCompleted, train_loss=1.0, slots=(SlotReport(slot=slot, stage="TRAINING", blueprint=bp),
                                                                SlotReport(slot="block2", stage="DORMANT")))
    engine.writer.flush()
    app = EsperApp(LiveSource(run_dir), refresh=REFRESH, run_dir=str(run_dir))
    notes = Notes()
    toasts: list = []
    try:
        async with app.run_test(size=SIZE, message_hook=lambda m: (notes(m), isinstance(m, Notify)
                                                                   and toasts.append(m.notification))) as pilot:
            await wait_for(pilot, lambda: len(list(app.dashboard.query(SlotCard))) == 2, "two cards")
            await wait_for(pilot, lambda: "LIVE" in app.dashboard.query_one("#header").text, "LIVE")
            await wait_for(pilot, lambda: slot in screen_text(app), "the card's title, literally")
            await pilot.press("g")
            await wait_for(pilot, lambda: isinstance(app.screen, BlueprintPicker), "the picker")
            await wait_for(pilot, lambda: bp in screen_text(app), "the blueprint's name, literally")
            text = screen_text(app)
            assert f"Germinate into {slot}" in text and "[@click=app.quit]desc[/]" in text
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is app.dashboard, "the picker to close")
            await pilot.press("c")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirm")
            await wait_for(pilot, lambda: f"Cull the seed in {slot}?" in screen_text(app), "the question, literally")
            await pilot.press("y")
            (cmd,) = await received(pilot, engine, "the cull")
            engine.answer(cmd, reason=EVIL)
            await wait_for(pilot, lambda: notes.any("rejected"), "the rejection")
            (toast,) = [t for t in toasts if "rejected" in t.message]
            assert toast.markup is False and not RAW.findall(toast.message)
            assert "[red]r[/red]" in toast.message and "\\x1b]0;pwned\\x07" in toast.message
            assert all(t.markup is False for t in toasts)
            assert app.is_running
    finally:
        engine.close()

