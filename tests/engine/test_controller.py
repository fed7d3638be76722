"""The heuristic controller (SPEC §5): pure decisions from a view of the run, each with a reason.

Torch-free. Histories and slot views are made by hand; gate verdicts are either built directly or
produced by the real gates (`engine.gates.evaluate`) where the controller must agree with them.
"""

from __future__ import annotations

import json

import pytest

from engine.controller import (
    Controller,
    ControllerConfig,
    ControllerView,
    Decision,
    SlotView,
    accuracy_plateau,
    host_is_stable,
)
from engine.gates import GateInputs, GateResult, evaluate
from engine.lifecycle import Stage

# Neutral names (no preference applies to them), so the tests see the plain rotation.
BLUEPRINTS = ("bp_a", "bp_b", "bp_c")
FLAT_LOSSES = (1.0, 1.0, 1.0, 1.0, 1.0)  # stable: no improvement at all
FLAT_ACCS = (80.0, 80.0, 80.0, 80.0, 80.0)  # plateau: no gain at all


def dormant(slot: str = "s1", fitting: tuple[str, ...] = BLUEPRINTS) -> SlotView:
    return SlotView(slot, Stage.DORMANT, None, 0, None, fitting)


def live(
    slot: str = "s1",
    stage: Stage = Stage.TRAINING,
    *,
    blueprint: str = "bp_a",
    epochs: int = 0,
    acc_start: float | None = None,
    gate: GateResult | None = None,
) -> SlotView:
    return SlotView(slot, stage, blueprint, epochs, acc_start, (), gate)


def view(
    epoch: int,
    slots: tuple[SlotView, ...],
    losses: tuple[float, ...] = FLAT_LOSSES,
    accs: tuple[float, ...] = FLAT_ACCS,
    blueprints: tuple[str, ...] = BLUEPRINTS,
) -> ControllerView:
    return ControllerView(epoch, tuple(losses), tuple(accs), tuple(slots), blueprints)


def germinations(decisions: list[Decision]) -> list[Decision]:
    return [d for d in decisions if d.action == "germinate"]


def passed_gate(gate: str, target: Stage) -> GateResult:
    return GateResult(gate=gate, target=target, passed=True, checks=())


def failed_gate(gate: str, target: Stage) -> GateResult:
    return GateResult(gate=gate, target=target, passed=False, checks=())


# ====================================================================== history predicates
class TestHostIsStable:
    def test_small_improvements_are_stable(self):
        assert host_is_stable([100.0, 99.0, 98.0, 97.1], 3, 0.03)

    def test_exactly_three_percent_is_not_stable(self):
        # 100 → 97 is exactly 3 % (3/100 == 0.03 in floating point too).
        assert not host_is_stable([100.0, 100.0, 100.0, 97.0], 3, 0.03)
        assert not host_is_stable([100.0, 97.0, 97.0, 97.0], 3, 0.03)

    def test_just_under_three_percent_is_stable(self):
        assert host_is_stable([100.0, 97.1, 97.1, 97.1], 3, 0.03)

    def test_only_the_last_window_counts(self):
        # A big drop before the window does not matter.
        assert host_is_stable([10.0, 1.0, 1.0, 1.0, 1.0], 3, 0.03)
        assert not host_is_stable([10.0, 1.0, 1.0, 1.0], 3, 0.03)

    def test_rising_loss_is_stable(self):
        assert host_is_stable([1.0, 1.1, 1.2, 1.3], 3, 0.03)

    @pytest.mark.parametrize("history", [[], [1.0], [1.0, 1.0], [1.0, 1.0, 1.0]])
    def test_too_short_history_is_not_stable(self, history):
        assert not host_is_stable(history, 3, 0.03)


class TestAccuracyPlateau:
    def test_small_gain_is_a_plateau(self):
        assert accuracy_plateau([80.0, 80.1, 80.2, 80.25], 3, 0.5)

    def test_gain_of_exactly_half_a_point_is_not_a_plateau(self):
        assert not accuracy_plateau([80.0, 80.2, 80.4, 80.5], 3, 0.5)

    def test_big_gain_is_not_a_plateau(self):
        assert not accuracy_plateau([70.0, 75.0, 78.0, 80.0], 3, 0.5)

    def test_falling_accuracy_is_a_plateau(self):
        assert accuracy_plateau([80.0, 79.0, 78.0, 77.0], 3, 0.5)

    def test_compares_against_window_epochs_ago(self):
        # Gain over the last 3 epochs is 0.2 even though the first epoch was far lower.
        assert accuracy_plateau([10.0, 80.0, 80.1, 80.1, 80.2], 3, 0.5)

    @pytest.mark.parametrize("history", [[], [80.0], [80.0, 80.0], [80.0, 80.0, 80.0]])
    def test_too_short_history_is_not_a_plateau(self, history):
        assert not accuracy_plateau(history, 3, 0.5)


# ====================================================================== germination
class TestGermination:
    RISING = (70.0, 72.0, 74.0, 76.0, 78.0)  # still learning: never a plateau

    def test_the_first_seed_is_grown_by_the_deadline_even_without_a_plateau(self):
        ctl = Controller()
        before = ControllerView(23, FLAT_LOSSES, self.RISING, (dormant(),), BLUEPRINTS, planned_epochs=60)
        assert ctl.decide(before) == []  # 40 % of 60 is epoch 24
        at = ControllerView(24, FLAT_LOSSES, self.RISING, (dormant(),), BLUEPRINTS, planned_epochs=60)
        [d] = ctl.decide(at)
        assert d.action == "germinate" and "no plateau by epoch 24" in d.reason and "60 planned" in d.reason

    def test_the_deadline_forces_only_the_first_seed_and_can_be_turned_off(self):
        ctl = Controller()
        ctl.last_germination_epoch = 10
        late = ControllerView(40, FLAT_LOSSES, self.RISING, (dormant(),), BLUEPRINTS, planned_epochs=60)
        assert ctl.decide(late) == []
        never = Controller(ControllerConfig(first_growth_by=1.0))
        assert never.decide(late) == []
        assert Controller().decide(ControllerView(40, FLAT_LOSSES, self.RISING, (dormant(),), BLUEPRINTS)) == []

    def test_defaults_match_the_spec(self):
        c = ControllerConfig()
        assert (c.min_epoch, c.stable_window, c.stable_rel_improvement) == (5, 3, 0.03)
        assert (c.plateau_window, c.plateau_min_gain) == (3, 0.5)
        assert (c.cull_after_epochs, c.cull_drop_points, c.max_growing_seeds) == (5, 2.0, 1)

    @pytest.mark.parametrize("epoch", [0, 1, 4])
    def test_nothing_before_min_epoch_even_on_a_plateau(self, epoch):
        ctl = Controller()
        assert ctl.decide(view(epoch, (dormant(),))) == []
        assert ctl.last_germination_epoch is None
        assert ctl.rotation == 0

    def test_germinates_into_first_dormant_slot_on_plateau_and_stable(self):
        ctl = Controller()
        slots = (live("s1", Stage.FOSSILIZED), dormant("s2"), dormant("s3"))
        decisions = ctl.decide(view(5, slots))
        assert len(decisions) == 1
        d = decisions[0]
        assert d.action == "germinate"
        assert d.slot == "s2"
        assert d.blueprint == "bp_a"
        assert isinstance(d.reason, str) and "plateau" in d.reason
        assert "+0.00" in d.reason  # the measured gain is in the reason
        assert ctl.last_germination_epoch == 5

    def test_no_germination_without_plateau(self):
        accs = (70.0, 72.0, 74.0, 76.0, 78.0)
        assert germinations(Controller().decide(view(5, (dormant(),), accs=accs))) == []

    def test_no_germination_while_host_still_improving(self):
        losses = (2.0, 1.8, 1.6, 1.4, 1.2)
        assert germinations(Controller().decide(view(5, (dormant(),), losses=losses))) == []

    def test_no_germination_with_too_short_history(self):
        assert Controller().decide(view(5, (dormant(),), losses=(1.0, 1.0), accs=(80.0, 80.0))) == []

    def test_nothing_when_no_slot_is_dormant(self):
        slots = (
            live("s1", Stage.FOSSILIZED),
            live("s2", Stage.EMBARGOED),
            live("s3", Stage.CULLED),
            live("s4", Stage.SHADOWING),
        )
        assert germinations(Controller().decide(view(5, slots))) == []

    @pytest.mark.parametrize("stage", [Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING])
    def test_one_growing_seed_at_a_time(self, stage):
        ctl = Controller()
        decisions = ctl.decide(view(5, (live("s1", stage), dormant("s2"))))
        assert germinations(decisions) == []
        assert ctl.last_germination_epoch is None

    @pytest.mark.parametrize("stage", [Stage.SHADOWING, Stage.PROBATIONARY, Stage.FOSSILIZED])
    def test_later_stages_do_not_block_growth(self, stage):
        decisions = Controller().decide(view(5, (live("s1", stage), dormant("s2"))))
        assert [(d.action, d.slot) for d in germinations(decisions)] == [("germinate", "s2")]

    def test_max_growing_seeds_is_configurable(self):
        ctl = Controller(ControllerConfig(max_growing_seeds=2))
        decisions = ctl.decide(view(5, (live("s1", Stage.TRAINING), dormant("s2"))))
        assert [d.slot for d in germinations(decisions)] == ["s2"]

    def test_not_again_within_plateau_window(self):
        ctl = Controller()
        assert len(germinations(ctl.decide(view(5, (dormant(),))))) == 1
        # The seed died quickly and the slot is free again: still wait plateau_window epochs.
        assert germinations(ctl.decide(view(6, (dormant(),)))) == []
        assert germinations(ctl.decide(view(7, (dormant(),)))) == []
        again = germinations(ctl.decide(view(8, (dormant(),))))
        assert len(again) == 1
        assert ctl.last_germination_epoch == 8

    def test_germinates_at_most_one_seed_per_epoch(self):
        ctl = Controller(ControllerConfig(max_growing_seeds=5))
        decisions = ctl.decide(view(5, (dormant("s1"), dormant("s2"), dormant("s3"))))
        assert len(germinations(decisions)) == 1


# ====================================================================== blueprint rotation
class TestBlueprintRotation:
    def germinate_at(self, ctl: Controller, epoch: int, fitting: tuple[str, ...] = BLUEPRINTS,
                     blueprints: tuple[str, ...] = BLUEPRINTS) -> str | None:
        decisions = germinations(ctl.decide(view(epoch, (dormant("s1", fitting),), blueprints=blueprints)))
        assert len(decisions) <= 1
        return decisions[0].blueprint if decisions else None

    def test_successive_germinations_rotate(self):
        ctl = Controller()
        picks = [self.germinate_at(ctl, e) for e in (5, 8, 11, 14, 17)]
        assert picks == ["bp_a", "bp_b", "bp_c", "bp_a", "bp_b"]

    def test_recently_culled_blueprint_is_skipped(self):
        ctl = Controller()
        ctl.note_culled("bp_a", 3)
        assert self.germinate_at(ctl, 5) == "bp_b"

    def test_culled_penalty_lasts_culled_penalty_epochs(self):
        cfg = ControllerConfig(culled_penalty_epochs=20)
        ctl = Controller(cfg)
        ctl.note_culled("bp_a", 3)
        assert self.germinate_at(ctl, 23) == "bp_b"  # 23 - 3 == 20: still penalized
        ctl.rotation = 0
        ctl.last_germination_epoch = None
        assert self.germinate_at(ctl, 24) == "bp_a"  # 24 - 3 > 20: fresh again

    def test_all_culled_recently_takes_least_recently_culled(self):
        ctl = Controller()
        ctl.note_culled("bp_a", 4)
        ctl.note_culled("bp_b", 2)
        ctl.note_culled("bp_c", 3)
        assert self.germinate_at(ctl, 5) == "bp_b"

    def test_all_fitting_culled_takes_least_recently_culled_among_fitting(self):
        ctl = Controller()
        ctl.note_culled("bp_a", 4)
        ctl.note_culled("bp_b", 1)  # culled longest ago, but does not fit
        ctl.note_culled("bp_c", 3)
        assert self.germinate_at(ctl, 5, fitting=("bp_a", "bp_c")) == "bp_c"

    def test_note_culled_ignores_none(self):
        ctl = Controller()
        ctl.note_culled(None, 3)
        ctl.note_culled("", 3)
        assert ctl.culled_at == {}

    def test_later_cull_replaces_earlier(self):
        ctl = Controller()
        ctl.note_culled("bp_a", 1)
        ctl.note_culled("bp_a", 30)
        assert ctl.culled_at == {"bp_a": 30}
        assert self.germinate_at(ctl, 35) == "bp_b"

    def test_only_fitting_blueprints_are_chosen(self):
        ctl = Controller()
        fitting = ("bp_a", "bp_c")
        picks = [self.germinate_at(ctl, e, fitting=fitting) for e in (5, 8, 11, 14)]
        assert picks == ["bp_a", "bp_c", "bp_a", "bp_c"]
        assert "bp_b" not in picks

    def test_single_fitting_blueprint_is_always_chosen(self):
        ctl = Controller()
        picks = [self.germinate_at(ctl, e, fitting=("bp_b",)) for e in (5, 8, 11)]
        assert picks == ["bp_b"] * 3

    def test_fitting_name_not_registered_is_never_chosen(self):
        # Only blueprints of the view (registered for the topology) are candidates.
        ctl = Controller()
        assert self.germinate_at(ctl, 5, fitting=("ghost",)) is None

    def test_empty_fitting_list_means_no_germination(self):
        ctl = Controller()
        assert self.germinate_at(ctl, 5, fitting=()) is None
        assert ctl.last_germination_epoch is None
        assert ctl.rotation == 0

    def test_no_registered_blueprints_means_no_germination(self):
        ctl = Controller()
        assert self.germinate_at(ctl, 5, blueprints=()) is None

    def test_preferred_blueprints_come_first_then_registry_order(self):
        ctl = Controller(ControllerConfig(prefer=("bp_c", "not_registered")))
        picks = [self.germinate_at(ctl, e) for e in (5, 8, 11, 14)]
        assert picks == ["bp_c", "bp_a", "bp_b", "bp_c"]

    def test_skips_dormant_slot_where_nothing_fits(self):
        ctl = Controller()
        slots = (dormant("s1", fitting=()), dormant("s2", fitting=("bp_c",)))
        decisions = germinations(ctl.decide(view(5, slots)))
        assert [(d.slot, d.blueprint) for d in decisions] == [("s2", "bp_c")]


# ====================================================================== live seeds
class TestManagingSeeds:
    @pytest.mark.parametrize(
        "stage,gate,target",
        [
            (Stage.GERMINATED, "G1", Stage.TRAINING),
            (Stage.TRAINING, "G2", Stage.BLENDING),
            (Stage.BLENDING, "G3", Stage.SHADOWING),
            (Stage.SHADOWING, "G4", Stage.PROBATIONARY),
        ],
    )
    def test_advance_when_gate_passed(self, stage, gate, target):
        decisions = Controller().decide(view(2, (live("s1", stage, gate=passed_gate(gate, target)),)))
        assert len(decisions) == 1
        d = decisions[0]
        assert (d.action, d.slot, d.cause) == ("advance", "s1", "gate")  # the gate's move, the autopilot's choice
        assert gate in d.reason and "passed" in d.reason

    def test_fossilize_exactly_when_passed_gate_targets_fossilized(self):
        g5 = passed_gate("G5", Stage.FOSSILIZED)
        decisions = Controller().decide(view(2, (live("s1", Stage.PROBATIONARY, gate=g5),)))
        assert [(d.action, d.slot) for d in decisions] == [("fossilize", "s1")]
        assert "G5" in decisions[0].reason

    @pytest.mark.parametrize("stage", [Stage.TRAINING, Stage.BLENDING, Stage.PROBATIONARY])
    def test_nothing_when_gate_failed_or_absent(self, stage):
        target = {Stage.TRAINING: Stage.BLENDING, Stage.BLENDING: Stage.SHADOWING,
                  Stage.PROBATIONARY: Stage.FOSSILIZED}[stage]
        ctl = Controller()
        assert ctl.decide(view(2, (live("s1", stage, gate=failed_gate("Gx", target)),))) == []
        assert ctl.decide(view(2, (live("s1", stage, gate=None),))) == []

    @pytest.mark.parametrize("stage", [Stage.DORMANT, Stage.FOSSILIZED, Stage.CULLED, Stage.EMBARGOED])
    def test_no_management_outside_live_stages(self, stage):
        g = passed_gate("G5", Stage.FOSSILIZED)
        s = SlotView("s1", stage, "bp_a", 10, 90.0, (), g)
        assert Controller().decide(view(2, (s,), accs=(50.0,) * 5)) == []

    @pytest.mark.parametrize("low,fossilize", [(0.9, False), (1.0, True), (1.5, True), (-0.5, False)])
    def test_controller_and_g5_agree(self, low, fossilize):
        g5 = evaluate("G5", GateInputs("s1", "cnn", Stage.PROBATIONARY, epochs_in_stage=3, blueprint="bp_a",
                                       counterfactual=low + 1.0, credit_low=low, credit_high=low + 2.0))
        assert g5.gate == "G5" and g5.target is Stage.FOSSILIZED
        assert g5.passed is fossilize
        decisions = Controller().decide(view(2, (live("s1", Stage.PROBATIONARY, epochs=2, gate=g5),)))
        actions = [d.action for d in decisions]
        assert ("fossilize" in actions) is g5.passed
        if not g5.passed:
            assert actions == []

    def test_failed_g5_never_fossilizes_even_after_long_probation(self):
        g5 = evaluate("G5", GateInputs("s1", "cnn", Stage.PROBATIONARY, epochs_in_stage=3, counterfactual=1.5,
                                       credit_low=0.9, credit_high=2.1))
        assert not g5.passed
        s = live("s1", Stage.PROBATIONARY, epochs=50, acc_start=80.0, gate=g5)
        decisions = Controller().decide(view(60, (s,), accs=(80.0,) * 5))
        assert all(d.action != "fossilize" for d in decisions)

    def test_g5_without_counterfactual_does_not_fossilize(self):
        g5 = evaluate("G5", GateInputs("s1", "cnn", Stage.PROBATIONARY, counterfactual=None))
        assert not g5.passed
        assert Controller().decide(view(2, (live("s1", Stage.PROBATIONARY, gate=g5),))) == []

    def test_real_passing_g4_advances(self):
        g4 = evaluate("G4", GateInputs("s1", "cnn", Stage.SHADOWING, epochs_in_stage=2, val_loss=1.0,
                                       val_loss_pre_blend=1.0, counterfactual=0.5))
        assert g4.passed
        decisions = Controller().decide(view(2, (live("s1", Stage.SHADOWING, gate=g4),)))
        assert [d.action for d in decisions] == ["advance"]


class TestCull:
    def decide(self, stage: Stage = Stage.BLENDING, epochs: int = 5, start: float | None = 80.0,
               now: float = 77.9, gate: GateResult | None = None) -> list[Decision]:
        s = live("s1", stage, blueprint="bp_b", epochs=epochs, acc_start=start, gate=gate)
        return Controller().decide(view(20, (s,), accs=(now,) * 5))

    @pytest.mark.parametrize(
        "stage", [Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING, Stage.SHADOWING, Stage.PROBATIONARY]
    )
    def test_culls_after_big_drop_and_enough_epochs(self, stage):
        decisions = self.decide(stage=stage)
        assert len(decisions) == 1
        d = decisions[0]
        assert (d.action, d.slot, d.cause) == ("cull", "s1", "autopilot")
        assert isinstance(d.reason, str)
        assert "2.10" in d.reason  # the drop
        assert "5 epochs" in d.reason  # time in stage
        assert "2.0" in d.reason  # the limit
        assert str(stage) in d.reason

    def test_not_at_four_epochs(self):
        assert self.decide(epochs=4) == []

    def test_not_at_exactly_two_point_drop(self):
        assert self.decide(now=78.0) == []

    def test_not_when_accuracy_rose(self):
        assert self.decide(now=90.0, epochs=30) == []

    def test_not_without_stage_start_accuracy(self):
        assert self.decide(start=None, epochs=30, now=0.0) == []

    def test_passing_gate_wins_over_cull(self):
        decisions = self.decide(stage=Stage.BLENDING, gate=passed_gate("G3", Stage.SHADOWING))
        assert [d.action for d in decisions] == ["advance"]

    def test_thresholds_are_configurable(self):
        ctl = Controller(ControllerConfig(cull_after_epochs=2, cull_drop_points=0.5))
        s = live("s1", Stage.TRAINING, epochs=2, acc_start=80.0)
        decisions = ctl.decide(view(20, (s,), accs=(79.0,) * 5))
        assert [d.action for d in decisions] == ["cull"]
        assert "1.00" in decisions[0].reason and "0.5" in decisions[0].reason


# ====================================================================== state
class TestState:
    def test_round_trip_preserves_rotation_and_culled_memory(self):
        ctl = Controller()
        assert self._pick(ctl, 5) == "bp_a"
        ctl.note_culled("bp_b", 6)
        state = ctl.state_dict()
        # Plain values only: it must survive a checkpoint (JSON here, weights-only torch.load there).
        state = json.loads(json.dumps(state))
        other = Controller()
        other.load_state_dict(state)
        assert other.rotation == ctl.rotation == 1
        assert other.last_germination_epoch == ctl.last_germination_epoch == 5
        assert other.culled_at == ctl.culled_at == {"bp_b": 6}
        # Both now make the same next choices: bp_b was culled at 6, so bp_c, then bp_a.
        for c in (ctl, other):
            assert self._pick(c, 7) is None  # within plateau_window of the last germination
            assert self._pick(c, 8) == "bp_c"
            assert self._pick(c, 11) == "bp_a"

    def test_state_dict_is_a_copy(self):
        ctl = Controller()
        ctl.note_culled("bp_a", 1)
        state = ctl.state_dict()
        state["culled_at"]["bp_b"] = 2
        assert ctl.culled_at == {"bp_a": 1}

    def test_load_resets_to_saved_values(self):
        ctl = Controller()
        ctl.note_culled("bp_a", 9)
        ctl.rotation = 2
        ctl.last_germination_epoch = 9
        ctl.load_state_dict(Controller().state_dict())
        assert (ctl.rotation, ctl.last_germination_epoch, ctl.culled_at) == (0, None, {})

    @staticmethod
    def _pick(ctl: Controller, epoch: int) -> str | None:
        d = germinations(ctl.decide(view(epoch, (dormant(),))))
        return d[0].blueprint if d else None


# ====================================================================== why it waits
class TestWaiting:
    """When the autopilot grows nothing, it says why, with the numbers (the dashboard shows it)."""

    def test_too_early(self):
        c = Controller()
        assert germinations(c.decide(view(2, (dormant(),)))) == []
        assert c.waiting == "lets the host train alone until epoch 5 (now 2)"

    def test_host_still_improving_says_by_how_much(self):
        c = Controller()
        assert germinations(c.decide(view(10, (dormant(),), losses=(1.0, 0.96, 0.92, 0.88)))) == []
        assert c.waiting.startswith("host not stable: val loss -4.3 %/epoch, needs > -3 % every epoch")

    def test_accuracy_still_rising(self):
        c = Controller()
        assert germinations(c.decide(view(10, (dormant(),), accs=(70.0, 72.0, 74.0, 76.0)))) == []
        assert c.waiting == "accuracy still rising: +6.00 points over 3 epochs (a plateau is below +0.5)"

    def test_says_when_it_will_grow_anyway(self):
        c = Controller()
        v = ControllerView(10, FLAT_LOSSES, (70.0, 72.0, 74.0, 76.0), (dormant(),), BLUEPRINTS, planned_epochs=60)
        assert germinations(c.decide(v)) == []
        assert c.waiting.endswith("; grows anyway at epoch 24")

    def test_one_seed_at_a_time(self):
        c = Controller()
        c.decide(view(10, (live("s1", Stage.BLENDING), dormant("s2"))))
        assert c.waiting == "brings up one seed at a time: s1 first"

    def test_not_waiting_once_it_germinates(self):
        c = Controller()
        assert germinations(c.decide(view(10, (dormant(),))))
        assert c.waiting is None

    def test_nothing_fits(self):
        c = Controller()
        assert germinations(c.decide(view(10, (dormant(fitting=()),)))) == []
        assert c.waiting == "would grow now, but no blueprint fits a free slot's parameter budget"
