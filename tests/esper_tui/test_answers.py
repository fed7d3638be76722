"""What the operator is told about a command (esper_tui/answers.py), without Textual: one notice per
command, and one more when the engine moves that slot on its own within the next epoch."""

from __future__ import annotations

from engine.telemetry.events import CommandApplied, CommandRejected, GovernorRollback, StageChanged
from esper_tui.answers import CommandDesk, pending_line
from esper_tui.messages import CommandRequest
from esper_tui.sources import SendResult
from esper_tui.state import RunState, apply
from esper_tui.status import Pending

FORCE = CommandRequest("force_advance", {"slot": "block1"}, "force_advance block1")
PAUSE = CommandRequest("pause")


def base(seq: int, epoch: int) -> dict:
    return {"seq": seq, "time": float(seq), "epoch": epoch, "step": epoch * 10}


def move(seq: int, epoch: int, slot: str, frm: str, to: str, cause: str, reason: str = "") -> StageChanged:
    return StageChanged(**base(seq, epoch), slot=slot, **{"from": frm, "to": to}, cause=cause, reason=reason)


def fold(desk: CommandDesk, state: RunState, *events) -> list[str]:
    """Fold events as the app does, then take the notices (their messages)."""
    for event in events:
        apply(state, event)
        desk.see(event)
    return [n.message for n in desk.take(state)]


def test_one_notice_per_command_the_engines_answer():
    desk, state = CommandDesk(), RunState()
    desk.queued(PAUSE)
    assert desk.pending == (Pending("pause", sent=False),) and pending_line(desk.pending) == "sending pause…"
    desk.sent(PAUSE, SendResult(True, "c1"))
    assert pending_line(desk.pending) == "awaiting the engine: pause"
    assert fold(desk, state) == []  # sent is not news
    assert fold(desk, state, CommandApplied(**base(1, 3), command_id="c1", command={"command": "pause"})) == [
        "pause: applied"]
    assert desk.pending == () and pending_line(desk.pending) == ""
    desk.queued(FORCE)
    desk.sent(FORCE, SendResult(True, "c2"))
    rejected = CommandRejected(**base(2, 3), command_id="c2", command={"command": "force_advance"}, reason="no seed")
    apply(state, rejected)
    desk.see(rejected)
    (notice,) = desk.take(state)
    assert (notice.message, notice.severity) == ("force_advance block1: rejected: no seed", "error")


def test_a_command_the_socket_refused_is_its_own_notice():
    desk = CommandDesk()
    desk.queued(PAUSE)
    desk.sent(PAUSE, SendResult(False, None, "no engine is listening"))
    assert [n.message for n in desk.take(RunState())] == ["pause: not sent: no engine is listening"]
    assert desk.pending == ()


def test_the_engines_own_move_right_after_is_told_once_even_when_folded_before_the_reply():
    """The engine can answer, and move on, before the UI has handled the socket's reply."""
    desk, state = CommandDesk(), RunState()
    desk.queued(FORCE)
    early = [
        CommandApplied(**base(10, 5), command_id="c1", command={"command": "force_advance"}),
        move(11, 5, "block1", "SHADOWING", "PROBATIONARY", "operator", "forced"),  # the command itself
        move(12, 6, "block2", "TRAINING", "BLENDING", "gate", "G2 passed"),  # another slot
        move(13, 6, "block1", "PROBATIONARY", "CULLED", "timeout", "probation ran out"),
    ]
    for event in early:
        apply(state, event)
        desk.see(event)
    desk.sent(FORCE, SendResult(True, "c1"))
    assert [n.message for n in desk.take(state)] == [
        "force_advance block1: applied",
        "after force_advance block1, on its own: block1 PROBATIONARY -> CULLED (timeout): probation ran out",
    ]
    assert fold(desk, state, move(14, 6, "block1", "CULLED", "EMBARGOED", "embargo")) == []  # a cull's end
    assert fold(desk, state, move(15, 7, "block1", "EMBARGOED", "DORMANT", "gate")) == []  # past the window


def test_a_rollback_after_any_command_is_told():
    desk, state = CommandDesk(), RunState()
    desk.queued(PAUSE)
    desk.sent(PAUSE, SendResult(True, "c1"))
    assert fold(desk, state, CommandApplied(**base(1, 2), command_id="c1", command={"command": "pause"})) == [
        "pause: applied"]
    rollback = GovernorRollback(**base(2, 3), trigger="nan", restored_epoch=1, seeds_culled=("block1",))
    assert fold(desk, state, rollback) == [
        "after pause, on its own: the governor rolled back to epoch 1 (nan) and culled block1"]
