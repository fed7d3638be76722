"""Why nothing happens, in words (issue 9 #2): each live seed's next step and the autopilot's wait."""

from __future__ import annotations

from engine.gates import GateCheck
from engine.lifecycle import Stage
from engine.telemetry.events import SlotReport
from esper_tui.hints import autopilot_line, next_step
from esper_tui.state import GateView, RunState, SlotView


def slot(stage: Stage = Stage.DORMANT, **report) -> SlotView:
    return SlotView(SlotReport(slot="block1", stage=stage, **report))


def blending(alpha: float, history: list[tuple[int, float]], passed: bool = False) -> SlotView:
    view = slot(Stage.BLENDING, blueprint="conv_light", alpha=alpha)
    view.alpha_history.extend(history)
    checks = [GateCheck(name="stage", value="BLENDING", threshold="BLENDING", passed=True),
              GateCheck(name="alpha", value=alpha, threshold=0.99, passed=passed, op=">="),
              GateCheck(name="epochs_in_stage", value=2, threshold=3, passed=passed, op=">=")]
    view.gate = GateView("G3", Stage.SHADOWING, passed, False, checks, 7)
    return view


def test_a_failing_gate_says_what_is_missing_and_about_when():
    view = blending(0.35, [(5, 0.05), (6, 0.2), (7, 0.35)])
    # alpha climbs 0.15 an epoch: 0.64 to go is about 5 epochs; the second failing check is counted.
    assert next_step(view, autopilot=True) == "G3 needs alpha ≥ 0.99 (now 0.35, about 5 epochs) (+1 more)"


def test_a_passed_gate_with_the_autopilot_off_says_which_key_moves_it():
    view = slot(Stage.PROBATIONARY, blueprint="conv_light", alpha=1.0)
    view.gate = GateView("G5", Stage.FOSSILIZED, True, False, [], 30)
    assert next_step(view, autopilot=False) == "G5 passed: f fossilizes it (autopilot off)"
    assert next_step(view, autopilot=True) == "G5 passed: the autopilot moves it on"
    view.moved(stage=Stage.SHADOWING)
    view.gate = GateView("G4", Stage.PROBATIONARY, True, False, [], 30)
    assert next_step(view, autopilot=False) == "G4 passed: a advances it (autopilot off)"


def test_a_verdict_from_before_the_last_move_is_not_shown_as_the_next_gate():
    view = blending(1.0, [], passed=True)
    view.moved(stage=Stage.SHADOWING)  # the G3 that moved it is history; G4 comes at the epoch's end
    assert next_step(view, autopilot=True) == "G4 is checked at the end of the epoch"


def test_slots_without_a_live_seed_have_no_next_step():
    assert next_step(slot(), autopilot=True) == ""
    assert next_step(slot(Stage.FOSSILIZED), autopilot=True) == "part of the host"


def test_the_autopilot_line_says_off_waiting_or_on():
    state = RunState()
    assert autopilot_line(state) == "autopilot: —"
    state.autopilot = False
    assert autopilot_line(state) == "autopilot off: only you move seeds (o turns it on)"
    state.autopilot, state.autopilot_waiting = True, "host not stable: val loss -4.1 %/epoch"
    assert autopilot_line(state) == "autopilot waits: host not stable: val loss -4.1 %/epoch"
    state.autopilot_waiting = None
    assert autopilot_line(state) == "autopilot on"
    state.autopilot_waiting, state.status = "host not stable", "FINISHED"  # no wait outlives the run
    assert autopilot_line(state) == "autopilot on: the run has ended"
