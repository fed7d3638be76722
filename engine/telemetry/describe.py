"""Every event in words: one line and a category, the same for the headless printer and the dashboard.

Owns only wording. Pure and torch-free: it knows the event models and the gates' sentences, nothing
about terminals, colours, widgets or files. Which lines a reader shows (the printer skips metrics,
the dashboard skips what its curves draw) is the reader's choice; what a line says is decided here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from engine.telemetry.events import (
    AutopilotWaiting,
    CheckpointSaved,
    CommandApplied,
    CommandReceived,
    CommandRejected,
    ControllerDecision,
    EpochCompleted,
    EventBase,
    GateEvaluated,
    GovernorRollback,
    RanksVerified,
    RunFailed,
    RunFinished,
    RunPaused,
    RunResumed,
    RunStarted,
    SeedGerminated,
    SlotReport,
    StageChanged,
    StepMetrics,
    WarningEvent,
)

NONE = "—"  # a value that was not measured

CATEGORIES: tuple[str, ...] = (
    "lifecycle", "gates", "operator", "autopilot", "governor", "warnings", "checkpoints", "run", "metrics",
)
"""What a line is about, in the order the dashboard lists them: stage changes and germinations, gate
verdicts, the operator's commands and the engine's answers, the autopilot's decisions, the governor's
rollbacks, warnings (the run log's own problems included), checkpoints, the run as a whole, metrics."""

KIND_CATEGORY: dict[str, str] = {
    "run_started": "run", "run_paused": "run", "run_resumed": "run", "run_finished": "run", "run_failed": "run",
    "seed_germinated": "lifecycle", "stage_changed": "lifecycle",
    "gate_evaluated": "gates",
    "command_received": "operator", "command_applied": "operator", "command_rejected": "operator",
    "controller_decision": "autopilot", "autopilot_waiting": "autopilot",
    "governor_rollback": "governor",
    "warning": "warnings", "log_problem": "warnings",
    "checkpoint_saved": "checkpoints", "ranks_verified": "run",
    "step_metrics": "metrics", "epoch_completed": "metrics",
}
"""Event kind → category ("log_problem": a line of the run log a reader could not use)."""


def category_of(kind: str) -> str:
    """The category of an event kind; a kind this module does not know yet is about the run."""
    return KIND_CATEGORY.get(kind, "run")


@dataclass(frozen=True, slots=True)
class Description:
    """One event in words.

    `level` says how loud the line is: info, warning (a forced move, a cull, a warning) or error (a
    refused command, a rollback, a crash). `stage` is the stage a slot entered (stage changes) or
    holds (germinations), so a reader can mark it; `gate` names the gate whose verdict the line
    reports, when one does ("G2"), so gate verdicts can be found whatever else the line is about.
    """

    text: str
    category: str
    level: str = "info"
    stage: str | None = None
    gate: str | None = None


def describe(event: EventBase, *, planned_epochs: int | None = None) -> Description | None:
    """The line for `event`, or None when it has nothing to say (the autopilot no longer waiting).

    `planned_epochs` (from `run_started`) lets an epoch line read "epoch 7/30".
    """
    handler = _DESCRIBERS.get(type(event))
    if handler is None:  # a kind added to the contract after this module: its name, as words
        return Description(event.kind.replace("_", " "), category_of(event.kind))
    if isinstance(event, EpochCompleted):
        return _epoch(event, planned_epochs)
    return handler(event)


# ---------------------------------------------------------------------------------------- numbers
def num(value: Any, fmt: str = ".4g") -> str:
    """A measured number, or "—" when it was not measured."""
    if value is None:
        return NONE
    if isinstance(value, float):
        return format(value, fmt)
    return str(value)


def pct(value: float | None) -> str:
    """Accuracy in points ("91.2%"); the engine carries accuracies in percentage points already."""
    return NONE if value is None else f"{value:.1f}%"


def credit(value: float | None, low: float | None = None, high: float | None = None) -> str:
    """A seed's credit as the slot cards write it: "cf +1.8 [+0.9, +2.7]", or "cf —"."""
    if value is None:
        return f"cf {NONE}"
    text = f"cf {value:+.1f}"
    if low is not None and high is not None:
        text += f" [{low:+.1f}, {high:+.1f}]"
    return text


# ---------------------------------------------------------------------------------------- the run
def isolation_words(isolation: dict[str, Any]) -> str:
    """The blending isolation policy in words: whether the host learns through a blending seed."""
    detach = isolation.get("blend_detach")
    source = isolation.get("source")
    if detach is None:
        words = f"blending isolation {NONE}"
    elif detach:
        words = "host shielded from blending seeds"
    else:
        words = "host learns through blending seeds"
    return f"{words} ({source})" if source else words


def _run_started(e: RunStarted) -> Description:
    if not e.resumed:
        started = "started"
    elif e.resumed_from_epoch is None:
        started = "resumed"
    else:
        started = f"resumed from epoch {e.resumed_from_epoch}"
    slots = ", ".join(e.slots) or NONE
    return Description(
        f"run {e.run_id} {started}: task {e.task}, {e.topology} host on {e.device}, {e.planned_epochs} epochs, "
        f"slots {slots}; {isolation_words(e.isolation)}{_ranks_words(e.distributed)}", "run")


def _ranks_words(distributed: dict[str, Any] | None) -> str:
    if not distributed:
        return ""
    return f"; {distributed.get('world_size', '?')} ranks ({distributed.get('backend', '?')})"


FINAL_NAMES = {"val_accuracy": "val accuracy", "val_loss": "val loss", "train_loss": "train loss",
               "train_accuracy": "train accuracy", "epochs": "epochs", "seeds_fossilized": "seeds fossilized"}


def _final_value(key: str, value: float | None) -> str:
    if value is None:
        return NONE
    if key.endswith("accuracy"):
        return pct(value)
    if float(value).is_integer():
        return str(int(value))
    return num(value)


def _run_finished(e: RunFinished) -> Description:
    keys = sorted(e.final, key=lambda k: list(FINAL_NAMES).index(k) if k in FINAL_NAMES else len(FINAL_NAMES))
    final = ", ".join(f"{FINAL_NAMES.get(k, k.replace('_', ' '))} {_final_value(k, e.final[k])}" for k in keys)
    return Description(f"run {e.status}" + (f": {final}" if final else ""), "run")


def _run_failed(e: RunFailed) -> Description:
    return Description(f"run failed: {e.error_type}: {e.message}", "run", "error")


def _paused(e: RunPaused) -> Description:
    return Description(f"paused ({_by(e.cause)})", "run")


def _resumed(e: RunResumed) -> Description:
    return Description(f"resumed ({_by(e.cause)})", "run")


def _by(cause: str) -> str:
    return {"operator": "by the operator", "autopilot": "by the autopilot"}.get(cause, cause)


# ---------------------------------------------------------------------------------------- metrics
def _slot_summary(r: SlotReport) -> str:
    if r.seed_id is None and r.blueprint is None:
        return f"{r.slot} {r.stage}"
    text = f"{r.slot} {r.stage} alpha {r.alpha:.2f} r {num(r.grad_ratio, '.2f')}"
    if r.counterfactual is not None:
        text += " " + credit(r.counterfactual, r.credit_low, r.credit_high)
    return text


def _epoch(e: EpochCompleted, planned_epochs: int | None) -> Description:
    total = f"/{planned_epochs}" if planned_epochs else ""
    text = (f"epoch {e.epoch}{total}  train loss {num(e.train_loss, '.3f')}  val loss {num(e.val_loss, '.3f')}"
            f"  val acc {pct(e.val_accuracy)}")
    if e.slots:
        text += "  | " + " | ".join(_slot_summary(r) for r in e.slots)
    return Description(text, "metrics")


def _step(e: StepMetrics) -> Description:
    loss = num(e.loss) if e.finite else "not finite"
    return Description(f"step {e.step}: loss {loss}, lr {num(e.lr)}", "metrics")


# ---------------------------------------------------------------------------------------- lifecycle
def _germinated(e: SeedGerminated) -> Description:
    return Description(f"{e.slot}: seed {e.seed_id} germinated ({e.blueprint}, {e.params:,} params)",
                       "lifecycle", stage="GERMINATED")


# Why a stage changed, for a cause that says it by itself (a gate's own words come from its reason).
CAUSE_WORDS = {"autopilot": "autopilot", "operator": "operator", "governor": "governor",
               "timeout": "probation timed out", "embargo": "embargo"}
_TIMED_OUT = re.compile(r"^probation timed out( after \d+ epochs?)?:?\s*")


def _stage_changed(e: StageChanged) -> Description:
    to, reason = str(e.to_stage), e.reason.strip()
    gate = e.gate.gate if e.gate is not None else None
    if e.cause == "gate":
        why, detail = reason or (e.gate.reason if e.gate is not None else "gate"), ""
    elif e.cause == "timeout":
        # The trainer culls in probation for two reasons under the one cause "timeout": the time ran
        # out, or the credit's upper bound fell to 0 or below before it did. Say which happened.
        timed_out = _TIMED_OUT.match(reason)
        if timed_out:
            why, detail = f"probation timed out{timed_out.group(1) or ''}", reason[timed_out.end():]
        else:
            why, detail = "credit ≤ 0 during probation", reason
    else:
        why, detail = CAUSE_WORDS.get(e.cause, e.cause), reason
    if detail == f"germinated {e.blueprint}":
        detail = ""  # the germination's own line, just before, says so
    elif detail.lower().startswith(why.lower() + ": "):
        detail = detail[len(why) + 2:]  # "(governor): governor: nan loss …" says it once
    if e.forced:
        why += " FORCED"
    text = f"{e.slot}: {e.from_stage} -> {to} ({why})" + (f": {detail}" if detail else "")
    level = "warning" if e.forced or to == "CULLED" else "info"
    return Description(text, "lifecycle", level, stage=to, gate=gate)


def _gate(e: GateEvaluated) -> Description:
    result = e.as_result()
    name = e.gate or "transition"
    target = f" to {e.target}" if e.target is not None else ""
    if e.passed:
        verdict = "passes"
    else:
        verdict = "fails: " + "; ".join(c.sentence for c in result.failed_checks)
    forced = " (forced past)" if e.forced else ""
    return Description(f"{e.slot}: {name}{target} {verdict}{forced}", "gates", gate=e.gate)


# ---------------------------------------------------------------------------------------- autopilot
_LEGACY_WORDING = (
    # Logs written before the controller said "changed by": a fall is not a gain.
    (re.compile(r"accuracy gained (?=[+-]?\d)"), "accuracy changed by "),
)


def _reworded(reason: str) -> str:
    for pattern, words in _LEGACY_WORDING:
        reason = pattern.sub(words, reason)
    return reason


def _decision(e: ControllerDecision) -> Description:
    reason = f" ({_reworded(e.reason)})" if e.reason else ""
    if e.action == "germinate" and e.blueprint:
        where = f" in {e.slot}" if e.slot else ""
        return Description(f"autopilot: germinate {e.blueprint}{where}{reason}", "autopilot")
    target = f" {e.slot}" if e.slot else ""
    return Description(f"autopilot: {e.action}{target}{reason}", "autopilot")


def _waiting(e: AutopilotWaiting) -> Description | None:
    if e.reason is None:
        return None  # it stopped waiting: the germination that follows says so
    return Description(f"autopilot waits: {_reworded(e.reason)}", "autopilot")


# ---------------------------------------------------------------------------------------- operator
def command_words(command: dict[str, Any]) -> str:
    """An operator command as the operator would say it: "cull block2 (reason: …)", "set lr to 0.001"."""
    name = str(command.get("command", "?"))
    slot = command.get("slot")
    if name == "germinate":
        blueprint = command.get("blueprint")
        text = "germinate" + (f" {blueprint}" if blueprint else "") + (f" in {slot}" if slot else "")
    elif name == "autopilot":
        enabled = command.get("enabled")
        text = "autopilot " + ("on" if enabled else "off" if enabled is not None else NONE)
    elif name == "set_lr":
        text = f"set learning rate to {num(command.get('value'))}"
    elif name == "step_epoch":
        text = "step one epoch"
    else:
        text = name.replace("_", "-") + (f" {slot}" if slot else "")
    if command.get("reason"):
        text += f" (reason: {command['reason']})"
    return text


_GATE_REASON = re.compile(r"^(?:forced past )?(G[0-5]) failed")


def _received(e: CommandReceived) -> Description:
    return Description(f"operator: {command_words(e.command)}: received", "operator")


def _applied(e: CommandApplied) -> Description:
    detail = f" ({e.detail})" if e.detail else ""
    return Description(f"operator: {command_words(e.command)}: applied{detail}", "operator")


def _rejected(e: CommandRejected) -> Description:
    gate = _GATE_REASON.match(e.reason)
    return Description(f"operator: {command_words(e.command)}: rejected: {e.reason}", "operator", "error",
                       gate=gate.group(1) if gate else None)


# ---------------------------------------------------------------------------------------- the rest
_TRIGGER_WORDS = {"nan": "loss was NaN", "inf": "loss was infinite"}


def _rollback(e: GovernorRollback) -> Description:
    what = _TRIGGER_WORDS.get(e.trigger) or f"loss spiked to {num(e.loss)}"
    culled = ", ".join(e.seeds_culled) or "none"
    return Description(f"governor: {what}; rolled back to epoch {e.restored_epoch}, culled {culled}",
                       "governor", "error")


def _warning(e: WarningEvent) -> Description:
    message = e.message
    if e.slot and message.startswith(f"slot {e.slot}: "):
        message = message[len(f"slot {e.slot}: "):]  # said once, in front
    where = f" {e.slot}" if e.slot else ""
    return Description(f"warning{where}: {message}", "warnings", "warning")


def checkpoint_words(epochs: list[int]) -> str:
    """"checkpoint saved (epoch 10)"; several in a row: "checkpoints saved at epochs 5, 10, 15", and
    past four only the first two, the latest and the count: "… 5, 10, …, 40 (8 saves)"."""
    if len(epochs) == 1:
        return f"checkpoint saved (epoch {epochs[0]})"
    if len(epochs) <= 4:
        return "checkpoints saved at epochs " + ", ".join(map(str, epochs))
    return f"checkpoints saved at epochs {epochs[0]}, {epochs[1]}, …, {epochs[-1]} ({len(epochs)} saves)"


def _checkpoint(e: CheckpointSaved) -> Description:
    return Description(checkpoint_words([e.epoch]), "checkpoints")


# The checks that follow no move: said as when they happened, not "after end".
_VERIFIED_WHEN = {"start": "at the start", "resume": "on resuming", "end": "at the end of the run",
                  "stop": "as the run stopped"}


def _ranks_verified(e: RanksVerified) -> Description:
    n = len(e.checksums)
    when = _VERIFIED_WHEN.get(e.trigger, f"after {e.trigger}")
    if e.in_sync:
        return Description(f"{n} ranks in sync {when}", "run")
    ranks = ", ".join(map(str, e.diverged))
    differ = "differs" if len(e.diverged) == 1 else "differ"
    return Description(f"ranks DIVERGED {when}: rank {ranks} {differ} from rank 0", "run", "error")


_DESCRIBERS: dict[type, Any] = {
    RunStarted: _run_started,
    StepMetrics: _step,
    EpochCompleted: _epoch,
    SeedGerminated: _germinated,
    StageChanged: _stage_changed,
    GateEvaluated: _gate,
    WarningEvent: _warning,
    ControllerDecision: _decision,
    AutopilotWaiting: _waiting,
    CommandReceived: _received,
    CommandApplied: _applied,
    CommandRejected: _rejected,
    GovernorRollback: _rollback,
    CheckpointSaved: _checkpoint,
    RunPaused: _paused,
    RunResumed: _resumed,
    RanksVerified: _ranks_verified,
    RunFinished: _run_finished,
    RunFailed: _run_failed,
}
