"""Property tests (hypothesis) for replay (issue 11): any sequence of seeks, steps and plays leaves the
screen's state exactly what folding the log from its start to the same point gives; the log reader
keeps every valid line of a mutated log and reports every bad one, never raising."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.telemetry import read_events
from esper_tui.replay import ReplaySource
from esper_tui.state import RunState, apply, apply_all

STEERED = Path(__file__).resolve().parents[1] / "fixtures" / "steered-run.jsonl"
LINES = STEERED.read_text().splitlines(keepends=True)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def view(state: RunState) -> dict:
    """What the screen draws from a state (its redraw counter aside)."""
    drawn = dataclasses.asdict(state)
    drawn.pop("version")
    return drawn


OPS = st.one_of(
    st.tuples(st.just("seek"), st.integers(-2, 30)),
    st.tuples(st.sampled_from(["start", "end", "step", "step_event", "toggle"]), st.just(0)),
    st.tuples(st.just("wait"), st.integers(0, 3)),
    st.tuples(st.just("speed"), st.sampled_from([0, 0.25, 1, 8, 64])),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, min_size=1, max_size=12))
def test_seeking_anywhere_gives_the_state_of_folding_from_the_start(ops):
    clock = Clock()
    source = ReplaySource(STEERED, speed=2, clock=clock)
    source.load()
    state = RunState()
    for op, arg in ops:
        if op in ("seek", "start", "end"):  # the app rebuilds from what a seek returns
            events = source.seek(max(arg, 0)) if op == "seek" else source.seek_start() if op == "start" \
                else source.seek_end()
            state = apply_all(RunState(), events)
        elif op == "step":
            source.step()
        elif op == "step_event":
            source.step_event()
        elif op == "toggle":
            source.toggle()
        elif op == "speed":
            source.set_speed(arg)
        else:
            clock.t += arg
        for event in source.drain():  # the app drains every tick
            state = apply(state, event)
        assert view(state) == view(apply_all(RunState(), source.events[: source._sent])), (op, arg)
    assert source.epoch <= source.last_epoch


def mutate(data: st.DataObject) -> tuple[list[str], set[int]]:
    """The fixture's lines with some garbled (their 1-based numbers returned)."""
    lines = list(LINES)
    bad: set[int] = set()
    for index in data.draw(st.sets(st.integers(1, len(lines) - 2), max_size=8)):  # run_started stays
        how = data.draw(st.sampled_from(["cut", "junk", "bytes", "kind", "field"]))
        line = lines[index]
        if how == "cut":
            line = line[: max(1, len(line) // 2)] + "\n"
        elif how == "junk":
            line = data.draw(st.text(min_size=1, max_size=40).filter(
                lambda t: t.strip() and not any(c in t for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"))) + "\n"
        elif how == "bytes":
            line = "\x1b]0;pwned\x07" + line
        elif how == "kind":
            event = json.loads(line)
            event["kind"] = "from_the_future"
            line = json.dumps(event) + "\n"
        else:
            event = json.loads(line)
            event["seq"] = "not a number"
            line = json.dumps(event) + "\n"
        lines[index] = line
        bad.add(index + 1)
    return lines, bad


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_mutated_log_keeps_every_valid_line_and_reports_every_bad_one(tmp_path, data):
    lines, bad = mutate(data)
    path = tmp_path / "events.jsonl"
    path.write_text("".join(lines))
    read = read_events(path)  # never raises
    reported = {p.line_no for p in read.problems}
    assert bad <= reported, (sorted(bad), sorted(reported))
    kept = {e.seq for e in read.events}
    valid = {json.loads(LINES[i])["seq"] for i in range(len(LINES)) if i + 1 not in bad}
    assert kept == valid
