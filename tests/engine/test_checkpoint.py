"""Checkpoints (SPEC §5): the captured run state saved atomically with owner-only permissions, loaded
weights-only, and restored into a fresh trainer exactly (stages, alpha, weights, optimizers,
controller, random streams).
"""

from __future__ import annotations

import os
import pickle
import stat

import pytest
import torch

from engine import checkpoint
from engine.config import quick_config
from engine.lifecycle import Stage
from engine.trainer import Trainer


@pytest.fixture(autouse=True)
def _keep_global_rng():
    """The trainer seeds and restores torch's global RNG; leave no trace for other test files."""
    with torch.random.fork_rng(devices=[]):
        yield


CONFIG = quick_config(epochs=3, device="cpu")


def make_trainer(run_dir) -> Trainer:
    trainer = Trainer(CONFIG, run_dir, serve_commands=False)
    trainer._build()
    return trainer


def assert_tree_equal(a, b, where: str = "") -> None:
    """Recursive equality of nested dicts/lists/tuples holding tensors and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_tree_equal(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_tree_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A trainer with a BLENDING seed (block1) and a fossilized one (block2), one epoch trained, saved."""
    with torch.random.fork_rng(devices=[]):
        root = tmp_path_factory.mktemp("ckpt")
        t = make_trainer(root / "run1")
        bank = t.bank
        assert bank.germinate("block1", "conv_light", "operator").passed
        while t.host.slots["block1"].stage is not Stage.BLENDING:
            assert bank.advance("block1", True, "operator").applied
        assert bank.germinate("block2", "depthwise", "operator").passed
        while t.host.slots["block2"].stage is not Stage.FOSSILIZED:
            assert bank.advance("block2", True, "operator").applied
        t.epoch = 1
        t.val_losses, t.val_accuracies = [2.2, 2.0], [20.0, 30.0]
        t.controller.rotation = 2
        t.controller.last_germination_epoch = 1
        t.controller.note_culled("attention", 1)
        t._train_epoch()
        path = checkpoint.save(t._capture(copy=False).to_state(), root / "run1" / checkpoint.CHECKPOINT_NAME)
        expected = {
            "torch_rng": torch.get_rng_state(),
            "data_rng": t.data_gen.get_state(),
            "path": path,
        }
        yield t, expected
        t.writer.close()


@pytest.fixture
def restored(saved, tmp_path):
    t1, expected = saved
    state = checkpoint.load(expected["path"])  # the plain dict on disk
    t2 = make_trainer(tmp_path / "run2")
    torch.manual_seed(12345)  # scramble the global stream: restore must put it back
    t2._restore(checkpoint.load_run(expected["path"]))
    yield t1, t2, expected, state
    t2.writer.close()


class TestRoundTrip:
    def test_sanity_of_the_saved_run(self, saved):
        t1, _ = saved
        s1 = t1.host.slots["block1"]
        assert s1.stage is Stage.BLENDING
        assert 0.0 < s1.alpha < 1.0  # one epoch into the ramp: alpha is somewhere in between
        assert t1.host.slots["block2"].stage is Stage.FOSSILIZED
        assert t1.step == t1.steps_per_epoch > 0

    def test_stages_and_lifecycle(self, restored):
        t1, t2, _, _ = restored
        for sid, s1 in t1.host.slots.items():
            s2 = t2.host.slots[sid]
            assert s2.stage is s1.stage, sid
            assert (s2.blueprint, s2.seed_id, s2.epochs_in_stage) == (s1.blueprint, s1.seed_id, s1.epochs_in_stage)
            assert (s2.blend_step, s2.blend_progress) == (s1.blend_step, s1.blend_progress)
            assert s2.metrics.to_dict() == s1.metrics.to_dict()
            assert s2.seed_param_count() == s1.seed_param_count()

    def test_alpha(self, restored):
        t1, t2, _, _ = restored
        for sid, s1 in t1.host.slots.items():
            s2 = t2.host.slots[sid]
            assert s2.alpha == s1.alpha, sid
            assert torch.equal(s2.alpha_t, s1.alpha_t), sid
            assert s2.alpha_t.item() == pytest.approx(s2.alpha)

    def test_identical_outputs_in_eval_mode(self, restored):
        t1, t2, _, _ = restored
        x, _ = next(iter(t1.task.batches("val", 32, torch.Generator().manual_seed(0), torch.device("cpu"))))
        t1.host.eval()
        t2.host.eval()
        with torch.no_grad():
            assert torch.equal(t1.host(x), t2.host(x))
        assert_tree_equal(t1.host.state_dict(), t2.host.state_dict(), "model")

    def test_identical_optimizer_states(self, restored):
        t1, t2, _, _ = restored
        b1, b2 = t1.bank, t2.bank
        assert b2.fossil_order == b1.fossil_order == ["block2"]
        assert set(b2.seed_groups) == set(b1.seed_groups) == {"block1"}
        assert len(b2.opt.param_groups) == 2  # the host's group and the live seed's
        host_state, seed_state = b1.state_dict()["host_opt"], b1.state_dict()["seed_opts"]["block1"]
        assert host_state["state"] and seed_state["state"]  # trained: there is real state to compare
        assert_tree_equal(host_state, b2.state_dict()["host_opt"], "host_opt")
        assert_tree_equal(seed_state, b2.state_dict()["seed_opts"]["block1"], "seed_opt")
        assert_tree_equal(b1.opt.state_dict(), b2.opt.state_dict(), "optimizer")
        # The rebuilt optimizer holds the restored modules' own parameters.
        fossil = {id(p) for p in t2.host.slots["block2"].seed.parameters()}
        assert fossil <= {id(p) for p in b2.host_group["params"]}
        live = {id(p) for p in t2.host.slots["block1"].seed.parameters()}
        assert {id(p) for p in b2.seed_groups["block1"]["params"]} == live
        assert b2.seed_groups["block1"] is b2.opt.param_groups[1]

    def test_controller_history_and_clock(self, restored):
        t1, t2, _, _ = restored
        assert t2.controller.state_dict() == t1.controller.state_dict()
        assert t2.controller.rotation == 2
        assert t2.controller.culled_at == {"attention": 1}
        assert (t2.epoch, t2.step) == (t1.epoch, t1.step)
        assert t2.val_losses == t1.val_losses and t2.val_accuracies == t1.val_accuracies
        assert t2.autopilot == t1.autopilot

    def test_rng_state(self, restored):
        _, t2, expected, _ = restored
        assert torch.equal(torch.get_rng_state(), expected["torch_rng"])
        assert torch.equal(t2.data_gen.get_state(), expected["data_rng"])

    def test_training_continues_identically(self, restored):
        t1, t2, expected, _ = restored
        # Resumed from the same state, the next epoch is the same bit for bit.
        t2._train_epoch()
        torch.set_rng_state(expected["torch_rng"])
        t1_copy_state = checkpoint.load_run(expected["path"])
        t3 = make_trainer(t2.run_dir.parent / "run3")
        try:
            t3._restore(t1_copy_state)
            t3._train_epoch()
            assert_tree_equal(t2.host.state_dict(), t3.host.state_dict(), "model")
            assert_tree_equal(t2.bank.opt.state_dict(), t3.bank.opt.state_dict(), "optimizer")
            assert t2.host.slots["block1"].alpha == t3.host.slots["block1"].alpha
        finally:
            t3.writer.close()

    def test_state_is_plain_tensors_and_containers(self, restored):
        _, _, _, state = restored
        assert state["format"] == checkpoint.FORMAT

        def walk(x):
            if isinstance(x, dict):
                for k, v in x.items():
                    assert isinstance(k, (str, int)), k
                    walk(v)
            elif isinstance(x, (list, tuple)):
                for v in x:
                    walk(v)
            else:
                assert x is None or isinstance(x, (torch.Tensor, bool, int, float, str)), type(x)

        walk(state)


# ====================================================================== loading safely
_EXECUTED: list[str] = []


def _side_effect(tag: str) -> str:
    _EXECUTED.append(tag)
    return tag


class Payload:
    """Unpickling this calls `_side_effect`: a stand-in for arbitrary code in a hostile file."""

    def __reduce__(self):
        return (_side_effect, ("unpickled",))


class Custom:
    def __init__(self) -> None:
        self.value = 1


class TestLoad:
    def test_arbitrary_object_is_refused_not_executed(self, tmp_path):
        path = tmp_path / "evil.pt"
        torch.save({"format": checkpoint.FORMAT, "payload": Payload()}, path)
        _EXECUTED.clear()
        with pytest.raises((pickle.UnpicklingError, ValueError)):
            checkpoint.load(path)
        assert _EXECUTED == []

    def test_custom_class_instance_is_refused(self, tmp_path):
        path = tmp_path / "custom.pt"
        torch.save({"format": checkpoint.FORMAT, "obj": Custom()}, path)
        with pytest.raises((pickle.UnpicklingError, ValueError)):
            checkpoint.load(path)

    def test_missing_file(self, tmp_path):
        path = tmp_path / "nope.pt"
        with pytest.raises(checkpoint.CheckpointError) as info:
            checkpoint.load(path)
        message = str(info.value)
        assert str(path) in message
        assert "new run" in message or "resume" in message  # says what to do

    def test_directory_without_checkpoint(self, tmp_path):
        with pytest.raises(checkpoint.CheckpointError) as info:
            checkpoint.load(tmp_path)
        assert checkpoint.CHECKPOINT_NAME in str(info.value)

    def test_directory_with_checkpoint(self, tmp_path):
        checkpoint.save({"format": checkpoint.FORMAT, "x": torch.ones(2)}, tmp_path / checkpoint.CHECKPOINT_NAME)
        assert torch.equal(checkpoint.load(tmp_path)["x"], torch.ones(2))

    @pytest.mark.parametrize(
        "obj",
        [{"model": torch.zeros(1)}, {"format": checkpoint.FORMAT + 1}, [1, 2, 3], torch.zeros(3)],
        ids=["no-format", "other-format", "list", "tensor"],
    )
    def test_torch_file_that_is_not_an_esper_checkpoint(self, tmp_path, obj):
        path = tmp_path / "other.pt"
        torch.save(obj, path)
        with pytest.raises(ValueError, match="not an esper checkpoint"):
            checkpoint.load(path)

    @pytest.mark.parametrize(
        "content",
        [b"hello world\n", b"", b"PK\x03\x04 truncated zip"],
        ids=["text", "empty", "truncated-zip"],
    )
    def test_file_that_is_not_a_checkpoint_at_all(self, tmp_path, content):
        # A text file, an empty file or a damaged one is "not an esper checkpoint" too; it should say
        # so (ValueError naming the file), not leak KeyError('101') / EOFError from the unpickler.
        path = tmp_path / "junk.pt"
        path.write_bytes(content)
        with pytest.raises(ValueError) as info:
            checkpoint.load(path)
        assert str(path) in str(info.value)


# ====================================================================== saving safely
class TestSave:
    def test_mode_is_owner_only(self, tmp_path):
        path = checkpoint.save({"format": checkpoint.FORMAT, "x": torch.arange(3)}, tmp_path / "c.pt")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    def test_mode_is_owner_only_even_with_permissive_umask(self, tmp_path):
        old = os.umask(0)
        try:
            path = checkpoint.save({"format": checkpoint.FORMAT}, tmp_path / "c.pt")
        finally:
            os.umask(old)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    def test_overwrite_keeps_owner_only_mode(self, tmp_path):
        path = tmp_path / "c.pt"
        path.write_bytes(b"old")
        path.chmod(0o644)
        checkpoint.save({"format": checkpoint.FORMAT, "v": 2}, path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert checkpoint.load(path)["v"] == 2

    def test_atomic_no_tmp_left(self, tmp_path):
        path = checkpoint.save({"format": checkpoint.FORMAT, "x": torch.ones(4)}, tmp_path / "c.pt")
        assert path == tmp_path / "c.pt"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
        checkpoint.save({"format": checkpoint.FORMAT, "x": torch.zeros(4)}, path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
        assert torch.equal(checkpoint.load(path)["x"], torch.zeros(4))

    def test_stale_tmp_from_a_crash_does_not_matter(self, tmp_path):
        stale = tmp_path / "c.pt.tmp"
        stale.write_bytes(b"half a checkpoint")
        stale.chmod(0o644)
        path = checkpoint.save({"format": checkpoint.FORMAT, "v": 1}, tmp_path / "c.pt")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert checkpoint.load(path)["v"] == 1

    def test_failed_save_leaves_previous_checkpoint_intact(self, tmp_path):
        path = checkpoint.save({"format": checkpoint.FORMAT, "v": 1}, tmp_path / "c.pt")
        with pytest.raises(Exception):
            checkpoint.save({"format": checkpoint.FORMAT, "bad": lambda: None}, path)  # unpicklable
        assert checkpoint.load(path)["v"] == 1

    def test_trainer_checkpoint_file(self, saved):
        _, expected = saved
        path = expected["path"]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert not path.with_name(path.name + ".tmp").exists()
