"""What the dashboard knows about a run, and the one pure reducer that builds it from events.

`apply(state, event)` folds one telemetry event into a `RunState`; live runs and replays go through the
same function, so they look the same. No Textual, no torch, no clock: widgets read the state, and
every history here is bounded, so a run of 10⁶ events costs the same memory as a short one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from engine.gates import GateCheck
from engine.lifecycle import ENTRY_ALPHA, LIVE_STAGES, Stage
from engine.telemetry.describe import category_of
from engine.telemetry.describe import describe as describe_event
from engine.telemetry.events import Event, SlotReport
from esper_tui.timeline import Mark

HISTORY = 2000  # epochs of loss/accuracy kept for the curves
SLOT_HISTORY = 400  # per-slot alpha and gradient-ratio points kept for sparklines and curves
LOG_LINES = 1000  # lines kept in the event log panel
EPOCH_TIMES = 50  # recent epoch durations kept (the network view's ETA uses the last few)

# Statuses shown in the header.
STARTING, LIVE, PAUSED, FINISHED, STOPPED, CRASHED, DETACHED = (
    "STARTING", "LIVE", "PAUSED", "FINISHED", "STOPPED", "CRASHED", "DETACHED",
)


@dataclass(slots=True)
class GateView:
    """The last verdict of a gate on a slot."""

    gate: str | None
    target: Stage | None
    passed: bool
    forced: bool
    checks: list[GateCheck]  # as the engine logged them: value, threshold, comparator, credit
    epoch: int


@dataclass(slots=True)
class SlotView:
    """One slot as the dashboard knows it: the engine's own typed `report` (the slot's `SlotReport`
    from the last `epoch_completed`, moved on by the germinations and stage changes logged since;
    None in it means not measured, shown as "—", never 0), plus what only the reducer knows: whether
    the last stage change was forced, the last gate verdict, and bounded histories for the curves."""

    report: SlotReport
    forced: bool = False  # the last stage change was an operator override of a failing gate
    gate: GateView | None = None
    ratio_history: deque[float | None] = field(default_factory=lambda: deque(maxlen=SLOT_HISTORY))
    alpha_history: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=SLOT_HISTORY))

    @classmethod
    def empty(cls, slot: str) -> SlotView:
        """A slot nothing has been reported about yet: DORMANT, no seed."""
        return cls(SlotReport(slot=slot, stage=Stage.DORMANT))

    @property
    def slot(self) -> str:
        return self.report.slot

    @property
    def stage(self) -> Stage:
        return self.report.stage

    def moved(self, **changes: Any) -> None:
        """The report with `changes` (a logged event moved the slot on between epoch reports)."""
        self.report = self.report.model_copy(update=changes)


@dataclass(slots=True)
class EpochPoint:
    epoch: int
    train_loss: float | None
    val_loss: float | None
    train_accuracy: float | None
    val_accuracy: float | None


@dataclass(slots=True)
class LogLine:
    """One line of the event log panel. `level` is info | warning | error.

    `seq` is the event's, or None for a line about the log itself (a skipped line); `n` numbers the
    lines in the order the reducer added them (1, 2, …), so a widget can tell which lines are new.
    `category` is one of `engine.telemetry.describe.CATEGORIES` (filled from `kind` when not given);
    `stage` is the stage a slot entered, `gate` the gate whose verdict the line reports (see
    `engine.telemetry.describe.Description`).
    """

    seq: int | None
    epoch: int
    kind: str
    slot: str | None
    text: str
    level: str = "info"
    n: int = 0
    category: str = ""
    stage: str | None = None
    gate: str | None = None

    def __post_init__(self) -> None:
        if not self.category:
            self.category = category_of(self.kind)


@dataclass(frozen=True, slots=True)
class Restart:
    """Not an event: a source's word that it is reading its log again from the start (a resume
    superseded events it had already handed over). `apply` answers it with an empty state, and the
    events that follow rebuild it, so the screen shows what folding the log from scratch shows."""

    kind: ClassVar[str] = "restart"
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Isolation:
    """The run's isolation policy during BLENDING: whether the seed's input is detached, and where
    that came from ("default" for the topology, or "config")."""

    detach: bool
    source: str = ""

    @property
    def label(self) -> str:
        """The policy alone, in words: whether the host learns through a blending seed."""
        return "host shielded from blending" if self.detach else "host learns through blending"

    def __str__(self) -> str:
        return f"{self.label} ({self.source})" if self.source else self.label


@dataclass(slots=True)
class Answer:
    """The engine's answer to one operator command."""

    command_id: str
    command: str
    applied: bool
    reason: str


@dataclass(slots=True)
class RunState:
    """Everything the widgets draw. Mutated in place by `apply` (fast for long logs)."""

    run_id: str | None = None
    task: str | None = None
    topology: str | None = None
    device: str | None = None
    ranks: int | None = None  # processes under torchrun (run_started.distributed.world_size); None: one
    isolation: Isolation | None = None
    planned_epochs: int | None = None
    log_last_epoch: int | None = None  # a replay: the last epoch its log reaches (set by the app, once loaded)
    timeline: tuple[Mark, ...] = ()  # a replay: the whole log's lifecycle marks (set by the app, once loaded)
    host_params: int | None = None  # the seedless host's parameters (run_started.host_params, when logged)
    config: dict[str, Any] = field(default_factory=dict)
    blueprints: dict[str, str] = field(default_factory=dict)  # name → description (germinate picker)
    status: str = STARTING
    epoch: int = 0
    step: int = 0
    autopilot: bool | None = None
    autopilot_waiting: str | None = None  # what the autopilot waits for before it grows (its words)
    samples_per_s: float | None = None
    loss: float | None = None
    lr: float | None = None
    slots: dict[str, SlotView] = field(default_factory=dict)
    history: deque[EpochPoint] = field(default_factory=lambda: deque(maxlen=HISTORY))
    epoch_times: deque[float] = field(default_factory=lambda: deque(maxlen=EPOCH_TIMES))  # s, for the ETA
    log: deque[LogLine] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    answers: dict[str, Answer] = field(default_factory=dict)
    last_answer: Answer | None = None
    failure: tuple[str, str, str] | None = None  # (error type, message, traceback)
    final: dict[str, Any] = field(default_factory=dict)
    last_seq: int = 0
    version: int = 0  # bumped by every apply, so the UI redraws only when something changed
    logged: int = 0  # lines ever added to `log` (the newest line's `n`)
    skipped_lines: int = 0  # lines of the run log the source could not use (header badge)
    problems_seen: int = 0  # the source's problems already turned into log lines

    @property
    def val_accuracy(self) -> float | None:
        return self.history[-1].val_accuracy if self.history else None

    @property
    def val_loss(self) -> float | None:
        return self.history[-1].val_loss if self.history else None


def apply(state: RunState, event: Event | Restart) -> RunState:
    """Fold one event into `state` and return the state to use from now on: `state` itself,
    changed in place, except after a `Restart`, which returns a new, empty one. Unknown-to-the-UI
    fields are ignored."""
    if isinstance(event, Restart):
        return RunState(version=state.version + 1)  # a new version: the screen redraws
    handler = _HANDLERS.get(event.kind)
    if handler is not None:
        handler(state, event)
    state.epoch = max(state.epoch, event.epoch)
    state.step = max(state.step, event.step)
    state.last_seq = event.seq
    state.version += 1
    line = describe(event)
    if line is not None:
        _log(state, line)
    return state


def apply_all(state: RunState, events: Iterable[Event | Restart]) -> RunState:
    """Fold every event in order (see `apply`) and return the resulting state."""
    for event in events:
        state = apply(state, event)
    return state


def note_problems(state: RunState, problems: Sequence[str], skipped: int) -> RunState:
    """Show a source's problems with its log: each new one as a warning line of the event log, and
    `skipped` (lines it could not use) for the header. `problems` is the source's whole list so far
    (called every tick); only those not seen yet are added."""
    if skipped != state.skipped_lines or len(problems) > state.problems_seen:
        for text in problems[state.problems_seen:]:
            _log(state, LogLine(None, state.epoch, "log_problem", None, text, "warning"))
        state.problems_seen = len(problems)
        state.skipped_lines = skipped
        state.version += 1
    return state


def _log(state: RunState, line: LogLine) -> None:
    state.logged += 1
    line.n = state.logged
    state.log.append(line)


# ---------------------------------------------------------------------------- handlers
def _slot(state: RunState, name: str) -> SlotView:
    view = state.slots.get(name)
    if view is None:
        view = state.slots[name] = SlotView.empty(name)
    return view


def _run_started(state: RunState, e: Any) -> None:
    state.run_id, state.task, state.topology, state.device = e.run_id, e.task, e.topology, e.device
    state.planned_epochs = e.planned_epochs
    state.config = dict(e.config)
    state.blueprints = dict(getattr(e, "blueprints", {}) or {})
    state.autopilot = bool(e.config.get("autopilot", True)) if state.autopilot is None else state.autopilot
    detach = e.isolation.get("blend_detach")
    state.isolation = None if detach is None else Isolation(bool(detach), str(e.isolation.get("source", "")))
    state.host_params = e.host_params
    distributed = getattr(e, "distributed", None) or {}
    world = distributed.get("world_size")
    state.ranks = world if isinstance(world, int) and world > 1 else None
    for name in e.slots:
        _slot(state, name)
    state.status = LIVE
    state.failure = None


def _step_metrics(state: RunState, e: Any) -> None:
    state.loss, state.lr = e.loss, e.lr
    if e.samples_per_s is not None:
        state.samples_per_s = e.samples_per_s


def _epoch_completed(state: RunState, e: Any) -> None:
    state.history.append(EpochPoint(e.epoch, e.train_loss, e.val_loss, e.train_accuracy, e.val_accuracy))
    if e.samples_per_s is not None:
        state.samples_per_s = e.samples_per_s
    if e.epoch_time_s is not None:
        state.epoch_times.append(e.epoch_time_s)
    for report in e.slots:
        view = _slot(state, report.slot)
        view.report = report
        view.alpha_history.append((e.epoch, report.alpha))
        view.ratio_history.append(report.grad_ratio)


def _seed_germinated(state: RunState, e: Any) -> None:
    view = _slot(state, e.slot)
    view.moved(blueprint=e.blueprint, seed_id=e.seed_id, params=e.params)
    view.ratio_history.clear()


# The report's measurements of a live seed: gone once the slot holds none (or holds plain host).
UNMEASURED_WITHOUT_SEED = ("grad_ratio", "grad_ratio_threshold", "counterfactual", "credit_low", "credit_high",
                           "credit_method", "credit_compare", "blending_delta")


def _stage_changed(state: RunState, e: Any) -> None:
    view = _slot(state, e.slot)
    stage = e.to_stage  # a Stage: the lifecycle's own rules (entry alphas, live stages), not restated here
    changes: dict[str, Any] = dict(stage=stage, epochs_in_stage=0, alpha=ENTRY_ALPHA.get(stage, view.report.alpha))
    if stage is Stage.DORMANT:
        changes.update(blueprint=None, seed_id=None, params=0)
    if stage not in LIVE_STAGES:  # nothing of it is measured any more
        changes.update({name: None for name in UNMEASURED_WITHOUT_SEED})
    view.moved(**changes)
    view.forced = e.forced
    view.alpha_history.append((e.epoch, view.report.alpha))
    if e.gate is not None:
        _record_gate(view, e.gate.gate, e.gate.target, e.gate.passed, e.forced, e.gate.checks, e.epoch)


def _gate_evaluated(state: RunState, e: Any) -> None:
    _record_gate(_slot(state, e.slot), e.gate, e.target, e.passed, e.forced, e.checks, e.epoch)


def _record_gate(view: SlotView, gate: str | None, target: Stage | None, passed: bool, forced: bool,
                 checks: Sequence[GateCheck], epoch: int) -> None:
    view.gate = GateView(
        gate=gate,
        target=target,
        passed=passed,
        forced=forced,
        checks=list(checks),
        epoch=epoch,
    )


def _command_answer(state: RunState, e: Any) -> None:
    applied = e.kind == "command_applied"
    answer = Answer(e.command_id, str(e.command.get("command", "?")), applied, getattr(e, "reason", "") or "")
    state.answers[e.command_id] = answer
    state.last_answer = answer
    name = answer.command
    if applied and name == "autopilot":
        state.autopilot = bool(e.command.get("enabled"))


def _run_paused(state: RunState, e: Any) -> None:
    state.status = PAUSED


def _run_resumed(state: RunState, e: Any) -> None:
    state.status = LIVE


def _run_finished(state: RunState, e: Any) -> None:
    state.status = STOPPED if e.status == "stopped" else FINISHED
    state.final = dict(e.final)


def _run_failed(state: RunState, e: Any) -> None:
    state.status = CRASHED
    state.failure = (e.error_type, e.message, e.traceback)


def _autopilot_waiting(state: RunState, e: Any) -> None:
    state.autopilot_waiting = e.reason


_HANDLERS = {
    "autopilot_waiting": _autopilot_waiting,
    "run_started": _run_started,
    "step_metrics": _step_metrics,
    "epoch_completed": _epoch_completed,
    "seed_germinated": _seed_germinated,
    "stage_changed": _stage_changed,
    "gate_evaluated": _gate_evaluated,
    "command_applied": _command_answer,
    "command_rejected": _command_answer,
    "run_paused": _run_paused,
    "run_resumed": _run_resumed,
    "run_finished": _run_finished,
    "run_failed": _run_failed,
}


# ---------------------------------------------------------------------------- log lines
# The curves draw the metrics, the gate panel every verdict, a command's answer follows it, and the
# autopilot's current wait is on screen already (hints): the log shows none of these (the headless
# printer makes its own choice from the same words).
UNLOGGED_KINDS = frozenset({"step_metrics", "epoch_completed", "gate_evaluated", "command_received",
                            "autopilot_waiting"})


def describe(e: Event) -> LogLine | None:
    """The event log's line for an event, in `engine.telemetry.describe`'s words (None for the kinds
    the log does not show, see `UNLOGGED_KINDS`, and for events with nothing to say)."""
    if e.kind in UNLOGGED_KINDS:
        return None
    words = describe_event(e)
    if words is None:
        return None
    return LogLine(e.seq, e.epoch, e.kind, getattr(e, "slot", None), words.text, words.level,
                   category=words.category, stage=words.stage, gate=words.gate)
