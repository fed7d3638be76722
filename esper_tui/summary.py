"""`esper-tui replay --summary RUN`: a run log as a plain-text (markdown) report, without the UI.

What a person asks of a finished (or crashed, or still running) run the next morning: how it ended,
on what, how good it got, what became of each seed and why (every stage change with who caused it,
the gates that failed on the way, the credit it was judged on), what the operator did and what the
engine answered, and what in the log could not be read. Pure: events in, text out (`summarize`);
strings from the log are shown as text (`safe_text`), table cells cannot break their table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.telemetry.describe import command_words, credit, describe, pct
from engine.telemetry.runlog import LogRead
from engine.telemetry.safe_text import safe_text

# The settings a reader checks first, in this order (the whole config is one `--set` path each).
KEY_SETTINGS = ("task", "epochs", "batch_size", "seed", "device", "autopilot", "optim.name", "optim.lr",
                "credit.method", "lifecycle.blend_epochs", "lifecycle.alpha_curve", "lifecycle.embargo_epochs")


@dataclass
class SeedStory:
    """One seed's life as the log tells it."""

    slot: str
    seed_id: str
    blueprint: str | None
    moves: list[tuple[int, str, str, str, bool, str]] = field(default_factory=list)  # epoch, from, to, cause, forced, reason
    failed_gates: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # gate → (epoch, why)
    credit: str | None = None  # the last credit reported for it, in words
    credit_epoch: int | None = None


def cell(value: Any) -> str:
    """`value` as one markdown table cell: terminal-safe, one line, no bare `|`."""
    return safe_text(str(value)).replace("|", "\\|")


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def epoch_ranges(epochs: list[int]) -> str:
    """[4, 5, 6, 9] → "4–6, 9": a gate that failed for twenty epochs reads as one span."""
    spans: list[list[int]] = []
    for epoch in epochs:
        if spans and epoch <= spans[-1][1] + 1:
            spans[-1][1] = max(spans[-1][1], epoch)
        else:
            spans.append([epoch, epoch])
    return ", ".join(str(a) if a == b else f"{a}–{b}" for a, b in spans)


def _ending(events: list[Any]) -> str:
    last = events[-1] if events else None
    if last is None:
        return "EMPTY: the log holds no event"
    if last.kind == "run_finished":
        word = "FINISHED" if last.status == "completed" else last.status.upper()
        return f"{word} at epoch {last.epoch}"
    if last.kind == "run_failed":
        return f"CRASHED at epoch {last.epoch}: {safe_text(last.error_type)}: {safe_text(last.message.splitlines()[0] if last.message else '')}"
    return f"NO FINAL EVENT: the log ends at epoch {last.epoch} (still running, or the engine was killed)"


def _stories(events: Iterable[Any]) -> list[SeedStory]:
    stories: dict[str, SeedStory] = {}  # seed id → its story, in germination order
    live: dict[str, str] = {}  # slot → seed id on it now
    for e in events:
        if e.kind == "seed_germinated":
            stories[e.seed_id] = SeedStory(e.slot, e.seed_id, e.blueprint)
            live[e.slot] = e.seed_id
        elif e.kind == "stage_changed" and e.seed_id:
            story = stories.setdefault(e.seed_id, SeedStory(e.slot, e.seed_id, e.blueprint))
            story.moves.append((e.epoch, str(e.from_stage), str(e.to_stage), e.cause, e.forced, e.reason or ""))
        elif e.kind == "gate_evaluated" and not e.passed and not e.forced and e.slot in live:
            story = stories[live[e.slot]]
            failing = next((c for c in e.checks if not c.passed), None)
            why = failing.sentence if failing is not None else "failed"
            story.failed_gates.setdefault(e.gate, []).append((e.epoch, why))
        elif e.kind == "epoch_completed":
            for r in e.slots:
                if r.seed_id in stories and r.counterfactual is not None:
                    story = stories[r.seed_id]
                    method = f" ({safe_text(r.credit_method)})" if r.credit_method else ""
                    story.credit = f"{credit(r.counterfactual, r.credit_low, r.credit_high)}{method}"
                    story.credit_epoch = e.epoch
    return list(stories.values())


def summarize(read: LogRead, source: str = "") -> str:
    """The markdown report of one run log (as `read_events` read it)."""
    events = read.events
    starts = [e for e in events if e.kind == "run_started"]
    first = starts[0] if starts else None
    lines: list[str] = []
    title = f"run {safe_text(first.run_id)}: {safe_text(first.task)}" if first else "a run log without run_started"
    lines += [f"# {title}", ""]
    if source:
        lines.append(f"- log: {safe_text(source)}")
    lines.append(f"- ended: {_ending(events)}")
    if first is not None:
        lines.append(f"- host: {safe_text(first.topology)} on {safe_text(first.device)}"
                     + (f", {first.host_params:,} parameters" if first.host_params else "")
                     + f"; slots {', '.join(safe_text(s) for s in first.slots)}; planned epochs {starts[-1].planned_epochs}")
        world = (first.distributed or {}).get("world_size")
        if world:
            lines.append(f"- trained on {world} ranks ({safe_text((first.distributed or {}).get('backend', '?'))})")
    if len(starts) > 1:
        lines.append(f"- resumed {len(starts) - 1} time{'s' if len(starts) > 2 else ''} (from epoch"
                     f"{'s' if len(starts) > 2 else ''} {', '.join(str(s.resumed_from_epoch) for s in starts[1:])})")

    if first is not None:
        flat = _flat(first.config)
        lines += ["", "## Config", "", "| setting | value |", "|---|---|"]
        lines += [f"| {key} | {cell(flat[key])} |" for key in KEY_SETTINGS if key in flat]
        lines.append(f"| (and {len(flat) - sum(k in flat for k in KEY_SETTINGS)} more) | in run_started.config |")

    epochs = [e for e in events if e.kind == "epoch_completed"]
    lines += ["", "## Accuracy", ""]
    scored = [e for e in epochs if e.val_accuracy is not None]
    if scored:
        last, best = scored[-1], max(scored, key=lambda e: e.val_accuracy)
        lines.append(f"- final: val accuracy {pct(last.val_accuracy)}, val loss {last.val_loss:.4g} (epoch {last.epoch})")
        lines.append(f"- best: val accuracy {pct(best.val_accuracy)} (epoch {best.epoch})")
    else:
        lines.append("- no epoch completed")

    stories = _stories(events)
    lines += ["", "## Seeds", ""]
    if not stories:
        lines.append("No seed was germinated.")
    for story in stories:
        fate = story.moves[-1][2] if story.moves else "GERMINATED"
        lines += [f"### {cell(story.seed_id)}: {cell(story.blueprint or '?')} in {cell(story.slot)}, {fate}", ""]
        lines += ["| epoch | move | by | reason |", "|---|---|---|---|"]
        for epoch, source_stage, target, cause, forced, reason in story.moves:
            by = f"{cause}, forced" if forced else cause
            lines.append(f"| {epoch} | {source_stage} → {target} | {cell(by)} | {cell(reason)} |")
        lines.append("")
        for gate, failures in story.failed_gates.items():
            when = epoch_ranges([epoch for epoch, _ in failures])
            lines.append(f"- {gate} failed {len(failures)}× (epoch{'s' if len(failures) > 1 else ''} {when}); "
                         f"last: {safe_text(failures[-1][1])}")
        if story.credit is not None:
            lines.append(f"- credit (epoch {story.credit_epoch}): {story.credit} accuracy points")
        lines.append("")

    lines += ["## Operator commands", ""]
    received = [e for e in events if e.kind == "command_received"]
    answers = {e.command_id: e for e in events if e.kind in ("command_applied", "command_rejected")}
    if not received:
        lines.append("None.")
    else:
        lines += ["| epoch | command | answer |", "|---|---|---|"]
        for e in received:
            answer = answers.get(e.command_id)
            said = ("applied" if answer is not None and answer.kind == "command_applied"
                    else f"rejected: {answer.reason}" if answer is not None else "no answer in the log")
            lines.append(f"| {e.epoch} | {cell(command_words(e.command))} | {cell(said)} |")

    rollbacks = [e for e in events if e.kind == "governor_rollback"]
    if rollbacks:
        lines += ["", "## Governor", ""]
        lines += [f"- epoch {e.epoch}: {safe_text(describe(e).text)}" for e in rollbacks]

    lines += ["", "## The log itself", ""]
    lines.append(f"- {len(events):,} events read" + (f"; {read.superseded:,} superseded by a resume (dropped)"
                                                       if read.superseded else ""))
    skipped = [p for p in read.problems if p.skipped]
    lines.append(f"- {len(skipped)} line{'' if len(skipped) == 1 else 's'} skipped"
                 + (f", {len(read.problems) - len(skipped)} odd but kept" if len(read.problems) > len(skipped) else ""))
    lines += [f"  - {safe_text(p.describe())}" for p in read.problems]
    return "\n".join(lines) + "\n"


__all__ = ["SeedStory", "cell", "epoch_ranges", "summarize"]
