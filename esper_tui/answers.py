"""What the operator is told about their commands: one notice per command (the engine's answer, or
why it never reached the engine), and one more when the engine moves the same slot on its own right
after (an autopilot, gate or timeout move, a governor rollback, within the next epoch).

`CommandDesk` follows each command from request to answer. It reads the reduced state's answers
and the events as the app folds them; it never touches Textual or a source, and never reads a clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from esper_tui.messages import CommandRequest
from esper_tui.sources import SendResult
from esper_tui.state import RunState
from esper_tui.status import Pending

Severity = Literal["information", "warning", "error"]

# Causes of a stage change the engine decided itself. "embargo" (a culled slot's scheduled release)
# is the expected end of a cull, not news; "operator" is the command itself.
ENGINE_CAUSES = frozenset({"autopilot", "gate", "timeout", "governor"})
FOLLOW_EPOCHS = 1  # how long after its answer a command's slot is watched: the rest of that epoch and the next
_RECENT = 64  # stage changes and rollbacks kept for an answer read after its events (see `take`)
_ANSWERS_KEPT = 256


@dataclass(frozen=True, slots=True)
class Notice:
    """One toast: what to say, how loud, for how long (None: Textual's default). No title: at 80×24
    a toast is a third of the screen wide, and every line it takes hides one of the gate panel's."""

    message: str
    severity: Severity = "information"
    timeout: float | None = None


@dataclass(slots=True)
class _Watch:
    """An applied command whose slot is watched for the engine's own next move."""

    request: CommandRequest
    epoch: int  # the epoch of its answer
    after_seq: int  # only events after the answer count


def pending_line(pending: tuple[Pending, ...]) -> str:
    """The "sending…" state in words, for a panel's border: "" when nothing is pending."""
    if not pending:
        return ""
    first = pending[0]
    more = f" (+{len(pending) - 1} more)" if len(pending) > 1 else ""
    return (f"awaiting the engine: {first.asked}" if first.sent else f"sending {first.asked}…") + more


def answer_notice(asked: str, applied: bool, reason: str) -> Notice:
    """The engine's answer to one command: applied, or rejected with its reason (longer on screen)."""
    if applied:
        return Notice(f"{asked}: applied")
    return Notice(f"{asked}: rejected: {reason}", severity="error", timeout=8)


def follow_up_notice(asked: str, event: Any) -> Notice:
    """What the engine did on its own right after `asked`: a stage change or a rollback."""
    if event.kind == "governor_rollback":
        culled = ", ".join(event.seeds_culled) or "no seed"
        return Notice(f"after {asked}, on its own: the governor rolled back to epoch {event.restored_epoch} "
                      f"({event.trigger}) and culled {culled}", severity="error", timeout=8)
    to = str(event.to_stage)
    reason = f": {event.reason}" if event.reason else ""
    severity: Severity = "warning" if to == "CULLED" else "information"
    return Notice(f"after {asked}, on its own: {event.slot} {event.from_stage} -> {to} ({event.cause}){reason}",
                  severity=severity, timeout=8)


class CommandDesk:
    """The operator's commands from request to answer, and the engine's own move right after.

    The app calls `queued` when a command goes to the sender, `sent` with the socket's reply, `see`
    for every event it folds, and `take` once per tick for the notices to show. An answer may be
    folded before the socket's reply is handled (the engine is fast, the UI thread busy): answers
    are looked up in the state, which keeps them, and the few events that could follow one are
    kept too, so nothing is missed either way.
    """

    def __init__(self) -> None:
        self._queued: list[CommandRequest] = []  # at the sender, no reply from the socket yet
        self._awaiting: dict[str, CommandRequest] = {}  # command id → request: sent, not answered
        self._answer_at: dict[str, tuple[int, int]] = {}  # command id → (epoch, seq) of its answer event
        self._recent: deque[Any] = deque(maxlen=_RECENT)
        self._watches: list[_Watch] = []
        self._notices: list[Notice] = []
        self._told: deque[int] = deque(maxlen=_RECENT)  # seqs of the events already told as follow-ups

    # ------------------------------------------------------------------ the command's way out
    def queued(self, request: CommandRequest) -> None:
        """`request` went to the sender (the socket has not answered yet)."""
        self._queued.append(request)

    def sent(self, request: CommandRequest, result: SendResult) -> None:
        """The socket's reply: from now on the engine's answer is awaited, or (not sent) that is the answer."""
        if request in self._queued:
            self._queued.remove(request)
        if result.ok and result.command_id:
            self._awaiting[result.command_id] = request
        else:
            self._notices.append(Notice(f"{request.asked}: not sent: {result.error}", severity="error", timeout=8))

    @property
    def pending(self) -> tuple[Pending, ...]:
        """Commands not answered yet, oldest first."""
        return (*(Pending(r.asked, False) for r in self._queued), *(Pending(r.asked, True) for r in self._awaiting.values()))

    # ------------------------------------------------------------------ what comes back
    def see(self, event: Any) -> None:
        """One event, as the app folds it (answers, stage changes, rollbacks matter)."""
        kind = getattr(event, "kind", "")
        if kind in ("command_applied", "command_rejected"):
            self._answer_at[event.command_id] = (event.epoch, event.seq)
            if len(self._answer_at) > _ANSWERS_KEPT:
                del self._answer_at[next(iter(self._answer_at))]
        elif kind in ("stage_changed", "governor_rollback"):
            self._recent.append(event)
            self._follow(event, self._watches)
        if self._watches:
            epoch = getattr(event, "epoch", 0)
            self._watches = [w for w in self._watches if epoch <= w.epoch + FOLLOW_EPOCHS]

    def take(self, state: RunState) -> list[Notice]:
        """The notices to show now: answers that arrived, follow-ups, commands that were not sent."""
        for command_id in [c for c in self._awaiting if c in state.answers]:
            request = self._awaiting.pop(command_id)
            answer = state.answers[command_id]
            self._notices.append(answer_notice(request.asked, answer.applied, answer.reason))
            epoch, seq = self._answer_at.get(command_id, (state.epoch, state.last_seq))
            if answer.applied:
                watch = _Watch(request, epoch, seq)
                self._watches.append(watch)
                for event in list(self._recent):  # folded before this answer was taken
                    self._follow(event, [watch])
        notices, self._notices = self._notices, []
        return notices

    def _follow(self, event: Any, watches: list[_Watch]) -> None:
        """One notice for an engine move that follows a watched command (the newest such command),
        never two for the same event."""
        if event.seq in self._told:
            return
        for watch in reversed(watches):
            if _within(event, watch) and _concerns(event, watch.request):
                self._told.append(event.seq)
                self._notices.append(follow_up_notice(watch.request.asked, event))
                return


def _within(event: Any, watch: _Watch) -> bool:
    """Whether `event` came after the watched answer, within the epochs watched."""
    return event.seq > watch.after_seq and event.epoch <= watch.epoch + FOLLOW_EPOCHS


def _concerns(event: Any, request: CommandRequest) -> bool:
    """A rollback concerns every command (it undoes the run's recent past); a stage change the
    engine decided concerns a command on the same slot."""
    if event.kind == "governor_rollback":
        return True
    return event.cause in ENGINE_CAUSES and request.slot is not None and event.slot == request.slot


__all__ = ["CommandDesk", "Notice", "answer_notice", "follow_up_notice", "pending_line"]
