"""Every structural change is one typed Decision applied by `apply_decision` (issue 10).

The log must say who moved a seed and why, whichever route the move came by; a refused decision
changes nothing and says why. A real CNN host and seed bank on CPU, events caught in a list.
"""

from __future__ import annotations

import pytest
import torch

from engine.commands import AdvanceCommand, CullCommand, ForceAdvanceCommand, FossilizeCommand, GerminateCommand
from engine.config import LifecycleConfig, OptimConfig
from engine.decisions import MOVES, Decision, Outcome, apply_decision
from engine.hosts import CNNHost
from engine.lifecycle import Stage
from engine.seedbank import SeedBank
from engine.telemetry.sink import Emitter, ListSink


@pytest.fixture
def rig():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        host = CNNHost(in_channels=1, num_classes=10, width=4, depth=3, lifecycle=LifecycleConfig(blend_steps=4))
        sink = ListSink()
        yield SeedBank(host, OptimConfig(), Emitter(sink).emit), sink


def changes(sink: ListSink) -> list[tuple[str, str, str, str, bool]]:
    return [(e.slot, str(e.from_stage), str(e.to_stage), e.cause, e.forced)
            for e in sink.events if e.kind == "stage_changed"]


@pytest.mark.parametrize("cause", ["operator", "autopilot", "gate", "timeout", "governor"])
def test_the_log_says_who_moved_the_seed_whatever_the_route(rig, cause):
    bank, sink = rig
    assert apply_decision(bank, Decision.germinate("block1", "norm", cause)) == Outcome.done()
    assert apply_decision(bank, Decision.advance("block1", cause)) == Outcome.done()  # G1 passes
    assert apply_decision(bank, Decision(ForceAdvanceCommand(slot="block1"), cause)) == Outcome.done()  # G2 not
    assert apply_decision(bank, Decision.cull("block1", cause, "the reason in the log")) == Outcome.done()
    assert changes(sink) == [("block1", "DORMANT", "GERMINATED", cause, False),
                             ("block1", "GERMINATED", "TRAINING", cause, False),
                             ("block1", "TRAINING", "BLENDING", cause, True),
                             ("block1", "BLENDING", "CULLED", cause, False)]
    culled = [e for e in sink.events if e.kind == "stage_changed"][-1]
    assert culled.reason == "the reason in the log"


def test_a_refused_decision_changes_nothing_and_says_why(rig):
    bank, sink = rig
    nothing = apply_decision(bank, Decision.advance("block1", "operator"))
    assert not nothing.applied and "DORMANT" in nothing.reason
    unknown = apply_decision(bank, Decision.cull("block9", "governor", "x"))
    assert not unknown.applied and "unknown slot 'block9'" in unknown.reason and "block1" in unknown.reason
    apply_decision(bank, Decision.germinate("block1", "norm", "operator"))
    apply_decision(bank, Decision.advance("block1", "operator"))
    gate = apply_decision(bank, Decision.advance("block1", "gate"))  # G2 needs epochs of training first
    assert not gate.applied and gate.reason.startswith("G2 failed: needs epochs in stage ≥ 3 (now 0)")
    assert bank.host.slots["block1"].stage is Stage.TRAINING
    assert changes(sink) == [("block1", "DORMANT", "GERMINATED", "operator", False),
                             ("block1", "GERMINATED", "TRAINING", "operator", False)]
    assert not apply_decision(bank, Decision.germinate("block2", "no_such_blueprint", "autopilot")).applied


def test_an_operators_command_is_a_decision_as_it_came(rig):
    bank, sink = rig
    moves = [GerminateCommand(slot="block2", blueprint="norm"), AdvanceCommand(slot="block2"),
             FossilizeCommand(slot="block2"), CullCommand(slot="block2", reason="looked wrong")]
    assert all(isinstance(m, MOVES) for m in moves)
    decisions = [Decision.from_operator(m) for m in moves]
    assert [(d.action, d.slot, d.blueprint, d.cause) for d in decisions] == [
        ("germinate", "block2", "norm", "operator"), ("advance", "block2", None, "operator"),
        ("fossilize", "block2", None, "operator"), ("cull", "block2", None, "operator")]
    assert decisions[-1].reason == "looked wrong"
    assert [apply_decision(bank, d).applied for d in decisions] == [True, True, False, True]  # no fossil from TRAINING
    assert [e.reason for e in sink.events if e.kind == "stage_changed"][-1] == "looked wrong"
