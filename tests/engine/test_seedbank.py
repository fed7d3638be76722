"""SeedBank (SPEC §5): optimizers (host + one per live seed, seeds join the host on fossilization)
and every structural move, each told as events.

A small CNNHost (width 4: slots block1 with 8 channels, block2 with 16) on CPU; events are caught
with a ListSink behind a real Emitter.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from engine.config import LifecycleConfig, OptimConfig
from engine.hosts import CNNHost
from engine.hosts.base import base_parameters
from engine.lifecycle import Stage
from engine.seedbank import SeedBank
from engine.telemetry import events as ev
from engine.telemetry.sink import Emitter, ListSink


@pytest.fixture(autouse=True)
def _keep_global_rng():
    """Hosts and seeds are built from torch's global RNG; leave no trace for other test files."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


class Rig:
    """A host, its bank, and everything the bank told the world."""

    def __init__(self, optim: OptimConfig | None = None, embargo_epochs: int = 2, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.host = CNNHost(in_channels=1, num_classes=10, width=4, depth=3,
                            lifecycle=LifecycleConfig(embargo_epochs=embargo_epochs, blend_steps=4))
        self.sink = ListSink()
        self.emitter = Emitter(self.sink)
        self.culled: list[str | None] = []
        self.bank = SeedBank(self.host, optim or OptimConfig(), self.emitter.emit, self._heard)

    def _heard(self, slot, record) -> None:
        if record.target is Stage.CULLED:
            self.culled.append(record.blueprint)

    @property
    def events(self) -> list[ev.EventBase]:
        return self.sink.events

    def clear(self) -> None:
        self.sink.events.clear()

    def slot(self, sid: str):
        return self.host.slots[sid]

    def to_stage(self, sid: str, stage: Stage, blueprint: str = "norm") -> None:
        """Germinate and force-advance a seed up to `stage` (forced moves are still legal moves)."""
        assert self.bank.germinate(sid, blueprint, "operator").passed
        while self.slot(sid).stage is not stage:
            assert self.bank.advance(sid, True, "operator").applied

    def train_steps(self, n: int = 2) -> None:
        gen = torch.Generator().manual_seed(123)
        for _ in range(n):
            x = torch.randn(4, 1, 8, 8, generator=gen)
            y = torch.randint(0, 10, (4,), generator=gen)
            loss = F.cross_entropy(self.host(x), y)
            self.bank.zero_grad()
            loss.backward()
            self.bank.step()
            self.host.on_optimizer_step()


def ids(params) -> set[int]:
    return {id(p) for p in params}


def stage_changes(events) -> list[ev.StageChanged]:
    return [e for e in events if isinstance(e, ev.StageChanged)]


# ====================================================================== germinate
class TestGerminate:
    def test_creates_seed_optimizer_and_emits_events_in_order(self):
        r = Rig()
        result = r.bank.germinate("block1", "norm", "autopilot")
        assert result.passed and result.gate == "G0"
        slot = r.slot("block1")
        assert slot.stage is Stage.GERMINATED

        assert r.sink.kinds() == ["gate_evaluated", "seed_germinated", "stage_changed"]
        gate, germ, change = r.events
        assert (gate.slot, gate.gate, gate.target, gate.passed, gate.forced) == (
            "block1", "G0", Stage.GERMINATED, True, False)
        assert gate.checks and all(c.passed for c in gate.checks)
        assert (germ.slot, germ.seed_id, germ.blueprint) == ("block1", "block1#1", "norm")
        assert germ.params == slot.seed_param_count() > 0
        assert (change.slot, change.seed_id, change.blueprint) == ("block1", "block1#1", "norm")
        assert (change.from_stage, change.to_stage) == (Stage.DORMANT, Stage.GERMINATED)
        assert change.cause == "autopilot" and change.forced is False
        assert change.gate is not None and change.gate.gate == "G0"
        assert [e.seq for e in r.events] == [1, 2, 3]

        assert set(r.bank.seed_groups) == {"block1"}
        group = r.bank.seed_groups["block1"]
        assert ids(group["params"]) == ids(slot.seed.parameters())
        # Behind the STE (GERMINATED, TRAINING) a seed steps at a fraction of its learning rate.
        assert group["lr"] == pytest.approx(r.bank.seed_lr * 0.1)
        # One optimizer: the host's group, then the seed's.
        assert [id(g) for g in r.bank.opt.param_groups] == [id(r.bank.host_group), id(group)]
        # The host's group does not hold the seed on trial.
        host_ids = ids(r.bank.host_group["params"])
        assert not host_ids & ids(slot.seed.parameters())

    def test_seed_lr_is_used_for_seed_optimizers(self):
        r = Rig(OptimConfig(lr=1e-3, seed_lr=5e-3))
        r.bank.germinate("block2", "attention", "operator")
        assert r.bank.seed_groups["block2"]["lr"] == pytest.approx(5e-4)  # behind the STE
        assert r.bank.host_group["lr"] == 1e-3
        r.bank.advance("block2", True, "operator")  # TRAINING: still behind the STE
        assert r.bank.seed_groups["block2"]["lr"] == pytest.approx(5e-4)
        r.bank.advance("block2", True, "operator")  # BLENDING: the seed's output counts, full step
        assert r.bank.seed_groups["block2"]["lr"] == 5e-3

    def test_training_lr_scale_is_configurable(self):
        r = Rig(OptimConfig(lr=1e-3, training_lr_scale=1.0))
        r.bank.germinate("block2", "attention", "operator")
        assert r.bank.seed_groups["block2"]["lr"] == 1e-3

    def test_unknown_blueprint_is_refused(self):
        r = Rig()
        result = r.bank.germinate("block1", "no_such_blueprint", "operator")
        assert not result.passed
        assert r.sink.kinds() == ["gate_evaluated"]
        gate = r.events[0]
        assert gate.gate == "G0" and gate.passed is False and gate.slot == "block1"
        assert "blueprint_registered" in {c.name for c in gate.checks if not c.passed}
        assert r.bank.seed_groups == {}
        assert r.slot("block1").stage is Stage.DORMANT
        assert len(r.bank.opt.param_groups) == 1

    def test_occupied_slot_is_refused(self):
        r = Rig()
        r.bank.germinate("block1", "norm", "operator")
        first_group = r.bank.seed_groups["block1"]
        seed = r.slot("block1").seed
        r.clear()
        result = r.bank.germinate("block1", "attention", "operator")
        assert not result.passed
        assert r.sink.kinds() == ["gate_evaluated"]
        assert r.events[0].passed is False
        assert "slot_dormant" in {c.name for c in r.events[0].checks if not c.passed}
        assert list(r.bank.seed_groups) == ["block1"] and r.bank.seed_groups["block1"] is first_group
        assert r.slot("block1").seed is seed
        assert r.slot("block1").blueprint == "norm"

    def test_two_seeds_two_groups_one_optimizer(self):
        r = Rig()
        r.bank.germinate("block1", "norm", "operator")
        r.bank.germinate("block2", "norm", "operator")
        assert set(r.bank.seed_groups) == {"block1", "block2"}
        assert len(r.bank.opt.param_groups) == 3


# ====================================================================== advance / force
class TestAdvance:
    def test_passing_gate(self):
        r = Rig()
        r.bank.germinate("block1", "norm", "operator")
        group = r.bank.seed_groups["block1"]
        r.clear()
        result = r.bank.advance("block1", False, "gate")
        assert result.passed and result.gate == "G1"
        assert r.sink.kinds() == ["gate_evaluated", "stage_changed"]
        gate, change = r.events
        assert (gate.gate, gate.target, gate.passed, gate.forced) == ("G1", Stage.TRAINING, True, False)
        assert (change.from_stage, change.to_stage, change.cause, change.forced) == (
            Stage.GERMINATED, Stage.TRAINING, "gate", False)
        assert r.slot("block1").stage is Stage.TRAINING
        assert r.bank.seed_groups["block1"] is group  # the seed keeps its param group (and its state)

    def test_failing_gate(self):
        r = Rig()
        r.to_stage("block1", Stage.TRAINING)
        r.clear()
        result = r.bank.advance("block1", False, "operator")
        assert not result.passed and not result.applied and result.gate == "G2"
        assert r.sink.kinds() == ["gate_evaluated"]
        assert r.events[0].passed is False and r.events[0].forced is False
        assert r.slot("block1").stage is Stage.TRAINING
        assert "block1" in r.bank.seed_groups

    def test_force_past_failing_gate(self):
        r = Rig()
        r.to_stage("block1", Stage.TRAINING)
        group = r.bank.seed_groups["block1"]
        r.clear()
        result = r.bank.advance("block1", True, "operator")
        assert result.forced and not result.passed and result.applied
        assert r.sink.kinds() == ["gate_evaluated", "stage_changed"]
        gate, change = r.events
        assert (gate.gate, gate.passed, gate.forced) == ("G2", False, True)
        assert (change.from_stage, change.to_stage, change.forced) == (Stage.TRAINING, Stage.BLENDING, True)
        assert change.cause == "operator"
        assert "forced" in change.reason
        assert change.gate is not None and change.gate.passed is False  # the failing verdict is kept
        assert r.slot("block1").stage is Stage.BLENDING
        assert r.slot("block1").alpha == 0.0
        assert r.bank.seed_groups["block1"] is group

    def test_illegal_advance_emits_no_gate_event(self):
        r = Rig()
        result = r.bank.advance("block1", True, "operator")  # DORMANT: force cannot help
        assert not result.applied and result.gate is None
        assert r.events == []
        assert r.slot("block1").stage is Stage.DORMANT

    def test_fossilize_refused_before_probation(self):
        r = Rig()
        r.to_stage("block1", Stage.SHADOWING)
        r.clear()
        result = r.bank.fossilize("block1", True, "operator")
        assert not result.applied
        assert stage_changes(r.events) == []
        assert r.slot("block1").stage is Stage.SHADOWING
        assert "block1" in r.bank.seed_groups


# ====================================================================== fossilize
class TestFossilize:
    @pytest.mark.parametrize("force", [False, True])
    def test_seed_joins_host_optimizer(self, force):
        r = Rig()
        r.to_stage("block1", Stage.PROBATIONARY)
        if not force:
            r.slot("block1").metrics.record_credit(1.5, 1.1, 1.9, "shadow_twin")  # G5 passes honestly
            r.slot("block1").epochs_in_stage = 3
        seed_params = list(r.slot("block1").seed.parameters())
        n_base = len(base_parameters(r.host))
        r.clear()
        result = r.bank.fossilize("block1", force, "operator")
        assert result.gate == "G5" and result.applied and result.passed is (not force)
        assert r.slot("block1").stage is Stage.FOSSILIZED
        assert r.sink.kinds() == ["gate_evaluated", "stage_changed"]
        change = r.events[1]
        assert (change.from_stage, change.to_stage, change.forced) == (Stage.PROBATIONARY, Stage.FOSSILIZED, force)

        assert "block1" not in r.bank.seed_groups
        # One group, base parameters first, then the fossil's: exactly like a model built this size.
        groups = r.bank.opt.param_groups
        assert len(groups) == 1
        assert [id(p) for p in groups[0]["params"][n_base:]] == [id(p) for p in seed_params]
        assert groups[0]["lr"] == r.bank.lr
        assert r.bank.fossil_order == ["block1"]
        assert r.bank.seed_groups == {}
        assert not any(p in r.bank.opt.state for p in seed_params)  # a fossil starts afresh in the host's group
        # The fossilized seed now counts as host for the gradient ratio.
        assert ids(seed_params) <= ids(r.bank.host_params())

    def test_host_params_cache_follows_structure(self):
        r = Rig()
        r.to_stage("block1", Stage.PROBATIONARY)
        seed_ids = ids(r.slot("block1").seed.parameters())
        assert not seed_ids & ids(r.bank.host_params())
        r.bank.fossilize("block1", True, "operator")
        assert seed_ids <= ids(r.bank.host_params())

    def test_fossilized_seed_trains_with_host_optimizer(self):
        r = Rig()
        r.to_stage("block1", Stage.PROBATIONARY, blueprint="attention")
        r.bank.fossilize("block1", True, "operator")
        before = [p.detach().clone() for p in r.slot("block1").seed.parameters()]
        r.train_steps(2)
        after = list(r.slot("block1").seed.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(after, before))


# ====================================================================== cull and embargo
class TestCull:
    def test_cull_removes_optimizer_and_notifies(self):
        r = Rig()
        r.to_stage("block1", Stage.BLENDING, blueprint="attention")
        r.clear()
        check = r.bank.cull("block1", "accuracy fell", "autopilot")
        assert check.allowed
        assert r.bank.seed_groups == {} and len(r.bank.opt.param_groups) == 1
        assert r.culled == ["attention"]
        assert r.slot("block1").stage is Stage.CULLED
        assert r.slot("block1").seed is None
        assert r.sink.kinds() == ["stage_changed"]
        change = r.events[0]
        assert (change.from_stage, change.to_stage, change.cause) == (Stage.BLENDING, Stage.CULLED, "autopilot")
        assert change.reason == "accuracy fell"
        assert change.blueprint == "attention" and change.seed_id == "block1#1"

    def test_cull_of_empty_slot_is_refused(self):
        r = Rig()
        check = r.bank.cull("block1", "why not", "operator")
        assert not check.allowed and check.reason
        assert r.culled == []
        assert r.events == []

    def test_cull_of_fossilized_is_refused(self):
        r = Rig()
        r.to_stage("block1", Stage.PROBATIONARY)
        r.bank.fossilize("block1", True, "operator")
        r.clear()
        check = r.bank.cull("block1", "regret", "operator")
        assert not check.allowed
        assert r.culled == []
        assert r.events == []
        fossil = ids(r.slot("block1").seed.parameters())
        assert fossil <= ids(r.bank.host_group["params"])

    def test_cull_leaves_other_seeds_alone(self):
        r = Rig()
        r.to_stage("block1", Stage.TRAINING)
        r.to_stage("block2", Stage.TRAINING)
        r.bank.cull("block1", "bad", "operator")
        assert set(r.bank.seed_groups) == {"block2"}

    def test_end_epoch_emits_embargo_transitions(self):
        r = Rig(embargo_epochs=2)
        r.to_stage("block1", Stage.TRAINING)
        r.bank.cull("block1", "bad", "operator")
        r.clear()
        r.bank.end_epoch()
        changes = stage_changes(r.events)
        assert [(c.slot, c.from_stage, c.to_stage, c.cause) for c in changes] == [
            ("block1", Stage.CULLED, Stage.EMBARGOED, "embargo")]
        r.clear()
        r.bank.end_epoch()
        assert r.events == []
        r.bank.end_epoch()
        changes = stage_changes(r.events)
        assert [(c.slot, c.from_stage, c.to_stage, c.cause) for c in changes] == [
            ("block1", Stage.EMBARGOED, Stage.DORMANT, "embargo")]
        assert r.slot("block1").stage is Stage.DORMANT
        # The slot is free again: a new seed gets a new optimizer.
        assert r.bank.germinate("block1", "norm", "operator").passed
        assert r.slot("block1").seed_id == "block1#2"
        assert "block1" in r.bank.seed_groups

    def test_zero_embargo_releases_at_once(self):
        r = Rig(embargo_epochs=0)
        r.to_stage("block2", Stage.GERMINATED)
        r.bank.cull("block2", "bad", "operator")
        r.clear()
        r.bank.end_epoch()
        changes = stage_changes(r.events)
        assert [(c.from_stage, c.to_stage, c.cause) for c in changes] == [
            (Stage.CULLED, Stage.EMBARGOED, "embargo"), (Stage.EMBARGOED, Stage.DORMANT, "embargo")]

    def test_end_epoch_on_quiet_host_emits_nothing(self):
        r = Rig()
        r.bank.end_epoch()
        assert r.events == []


# ====================================================================== learning rate
class TestSetLr:
    def test_changes_every_param_group(self):
        r = Rig(OptimConfig(lr=1e-3, seed_lr=2e-3))
        r.to_stage("block1", Stage.PROBATIONARY)
        r.bank.fossilize("block1", True, "operator")  # host optimizer: two groups
        r.to_stage("block2", Stage.TRAINING)  # a seed optimizer
        r.bank.set_lr(0.02)
        groups = r.bank.opt.param_groups
        assert len(groups) == 2  # host (with the fossil folded in) and the live seed
        assert groups[0]["lr"] == 0.02 and groups[1]["lr"] == pytest.approx(0.002)  # seed behind the STE
        assert r.bank.lr == r.bank.seed_lr == 0.02
        r.bank.advance("block2", True, "operator")
        assert r.bank.seed_groups["block2"]["lr"] == 0.02

    def test_later_optimizers_use_new_lr(self):
        r = Rig()
        r.bank.set_lr(0.05)
        r.to_stage("block1", Stage.PROBATIONARY)
        assert r.bank.seed_groups["block1"]["lr"] == 0.05
        r.bank.fossilize("block1", True, "operator")
        assert [g["lr"] for g in r.bank.opt.param_groups] == [0.05]


# ====================================================================== checkpoint state
def _assert_same_optimizer(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert [len(g["params"]) for g in sa["param_groups"]] == [len(g["params"]) for g in sb["param_groups"]]
    for ga, gb in zip(sa["param_groups"], sb["param_groups"]):
        assert {k: v for k, v in ga.items() if k != "params"} == {k: v for k, v in gb.items() if k != "params"}
    assert sa["state"].keys() == sb["state"].keys()
    assert sa["state"], "the optimizer should have state after training steps"
    for k in sa["state"]:
        assert sa["state"][k].keys() == sb["state"][k].keys()
        for name in sa["state"][k]:
            va, vb = sa["state"][k][name], sb["state"][k][name]
            if isinstance(va, torch.Tensor):
                assert torch.equal(va, vb), (k, name)
            else:
                assert va == vb


class TestState:
    @pytest.mark.parametrize("optim", [OptimConfig(), OptimConfig(name="sgd", lr=0.01)], ids=["adamw", "sgd"])
    def test_round_trip_rebuilds_structure_and_state(self, optim):
        a = Rig(optim, seed=0)
        a.to_stage("block1", Stage.PROBATIONARY, blueprint="attention")
        a.train_steps(2)
        a.bank.fossilize("block1", True, "operator")
        a.to_stage("block2", Stage.BLENDING, blueprint="depthwise")
        a.bank.set_lr(0.004)
        a.train_steps(3)

        slots = copy.deepcopy({sid: s.export_state() for sid, s in a.host.slots.items()})
        weights = copy.deepcopy(a.host.state_dict())
        bank_state = copy.deepcopy(a.bank.state_dict())
        assert bank_state["fossil_order"] == ["block1"]
        assert set(bank_state["seed_opts"]) == {"block2"}

        b = Rig(optim, seed=1)  # different initial weights: everything must come from the state
        for sid, st in slots.items():
            b.host.slots[sid].import_state(st)
        b.host.load_state_dict(weights)
        b.bank.load_state_dict(bank_state)

        assert b.bank.lr == b.bank.seed_lr == 0.004
        assert b.bank.fossil_order == ["block1"]
        assert set(b.bank.seed_groups) == {"block2"}
        hb = b.bank.opt.param_groups
        assert len(hb) == 2  # the host's group (with the fossil) and the live seed's
        n_base = len(base_parameters(b.host))
        assert [id(p) for p in hb[0]["params"][n_base:]] == [id(p) for p in b.slot("block1").seed.parameters()]
        assert ids(hb[0]["params"][:n_base]) == ids(base_parameters(b.host))
        seed_b = b.bank.seed_groups["block2"]
        assert seed_b is hb[1] and ids(seed_b["params"]) == ids(b.slot("block2").seed.parameters())
        _assert_same_optimizer(a.bank.opt, b.bank.opt)

        # Same state → the same next steps, bit for bit.
        a.train_steps(2)
        b.train_steps(2)
        for (na, pa), (nb, pb) in zip(a.host.state_dict().items(), b.host.state_dict().items()):
            assert na == nb
            assert torch.equal(pa, pb), na

    def test_state_dict_is_plain(self, tmp_path):
        r = Rig()
        r.to_stage("block1", Stage.PROBATIONARY)
        r.train_steps(1)
        r.bank.fossilize("block1", True, "operator")
        r.to_stage("block2", Stage.TRAINING)
        r.train_steps(1)
        path = tmp_path / "bank.pt"
        torch.save(r.bank.state_dict(), path)
        loaded = torch.load(path, weights_only=True)
        assert loaded["fossil_order"] == ["block1"]
        assert set(loaded["seed_opts"]) == {"block2"}

    def test_load_bumps_version(self):
        r = Rig()
        state = r.bank.state_dict()
        v = r.bank.version
        r.bank.load_state_dict(state)
        assert r.bank.version > v


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_fold_in_a_running_fused_optimizer_updates_new_params_like_a_first_step(name):
    """A fossil joins a host optimizer that has already stepped; its first update is a clean one."""
    from engine.config import OptimConfig
    from engine.seedbank import fold_in, make_optimizer

    torch.manual_seed(0)
    host_p, seed_p = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(3))
    cfg = OptimConfig(name=name, lr=0.1)
    opt = make_optimizer([host_p], cfg, 0.1)
    host_p.grad = torch.ones(5)
    opt.step()
    fold_in(opt, [seed_p])
    fresh_p = torch.nn.Parameter(seed_p.detach().clone())
    fresh = make_optimizer([fresh_p], cfg, 0.1)
    host_p.grad, seed_p.grad, fresh_p.grad = torch.ones(5), torch.full((3,), 0.5), torch.full((3,), 0.5)
    opt.step()
    fresh.step()
    torch.testing.assert_close(seed_p.detach(), fresh_p.detach())
