"""The transition table, walked pair by pair against SPEC §2."""

import itertools

import pytest

from engine.lifecycle import (
    GATE_FOR_EDGE,
    HAPPY_PATH,
    LIVE_STAGES,
    TRANSITIONS,
    Stage,
    check_transition,
    gate_for,
    next_stage,
    probation_limit,
)

S = Stage
# The edges SPEC §2 allows, written out independently of the table under test.
SPEC_EDGES = {
    (S.DORMANT, S.GERMINATED),
    (S.GERMINATED, S.TRAINING),
    (S.TRAINING, S.BLENDING),
    (S.BLENDING, S.SHADOWING),
    (S.SHADOWING, S.PROBATIONARY),
    (S.PROBATIONARY, S.FOSSILIZED),
    *((s, S.CULLED) for s in (S.GERMINATED, S.TRAINING, S.BLENDING, S.SHADOWING, S.PROBATIONARY)),
    (S.CULLED, S.EMBARGOED),
    (S.EMBARGOED, S.DORMANT),
}


def test_stage_members_and_names():
    assert [s.name for s in Stage] == [
        "DORMANT", "GERMINATED", "TRAINING", "BLENDING", "SHADOWING",
        "PROBATIONARY", "FOSSILIZED", "CULLED", "EMBARGOED",
    ]
    # Written to logs by name.
    assert str(Stage.BLENDING) == "BLENDING"


@pytest.mark.parametrize("source,target", list(itertools.product(Stage, Stage)))
def test_every_pair_against_the_spec(source, target):
    check = check_transition(source, target)
    assert check.allowed == ((source, target) in SPEC_EDGES)
    if not check.allowed:
        assert str(source) in check.reason and str(target) in check.reason
        assert check.reason.startswith("illegal transition")


def test_table_has_every_stage_and_fossilized_is_terminal():
    assert set(TRANSITIONS) == set(Stage)
    assert TRANSITIONS[S.FOSSILIZED] == frozenset()
    assert "terminal" in check_transition(S.FOSSILIZED, S.CULLED).reason


def test_happy_path_and_gates():
    assert next_stage(S.DORMANT) is S.GERMINATED
    assert next_stage(S.PROBATIONARY) is S.FOSSILIZED
    for stage in (S.FOSSILIZED, S.CULLED, S.EMBARGOED):
        assert next_stage(stage) is None
    gates = [gate_for(a, b) for a, b in zip(HAPPY_PATH, HAPPY_PATH[1:])]
    assert gates == ["G0", "G1", "G2", "G3", "G4", "G5"]
    assert gate_for(S.TRAINING, S.CULLED) is None
    assert set(GATE_FOR_EDGE) <= SPEC_EDGES
    assert LIVE_STAGES == {S.GERMINATED, S.TRAINING, S.BLENDING, S.SHADOWING, S.PROBATIONARY}


@pytest.mark.parametrize("planned,expected", [(10, 5), (40, 5), (50, 5), (100, 10), (300, 30)])
def test_probation_limit_minimum_five(planned, expected):
    assert probation_limit(planned) == expected
