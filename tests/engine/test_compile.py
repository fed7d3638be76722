"""torch.compile and the slots (SPEC §2: "Alpha is a tensor buffer, so changing it never recompiles").

* a compiled host with a live seed computes what the eager host computes (inductor, CPU);
* moving alpha (optimizer steps, `alpha_t.fill_`, the counterfactual context) reuses the compiled graph
  and the outputs follow alpha;
* a stage change *does* reach the compiled model: it recompiles and the output follows the new stage
  (so the no-recompile check above is not vacuous, and a compiled run never keeps stale semantics).

All slow (compilation); small inputs (batch 4, 8x8 images / 12 tokens) keep the whole file quick.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounter, CompileCounterWithBackend

from engine.config import LifecycleConfig
from engine.gates import GateThresholds
from engine.hosts import CNNHost, TransformerHost
from engine.lifecycle import Stage

pytestmark = pytest.mark.slow

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _keep_global_rng():
    """These tests seed torch's global RNG (seeds are built from it); leave no trace for other files."""
    with torch.random.fork_rng(devices=[]):
        yield


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _lifecycle() -> LifecycleConfig:
    # generous budget: the default CNNHost is small; linear ramp so alpha values are easy to read
    return LifecycleConfig(
        blend_steps=4, alpha_curve="linear", gates=GateThresholds(param_budget_fraction=100.0)
    )


def _perturb(module: torch.nn.Module, seed: int = 3) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)


def _cnn_with_seed(stage: Stage, blueprint: str = "conv_light"):
    torch.manual_seed(0)
    host = CNNHost(lifecycle=_lifecycle()).eval()
    slot = host.slots["block1"]
    assert slot.germinate(blueprint).passed
    _perturb(slot.seed)  # a zero-init seed would make every comparison below vacuous
    while slot.stage is not stage:
        assert slot.advance(force=True).applied
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return host, slot, x


def _transformer_with_seed(stage: Stage, blueprint: str = "mlp"):
    torch.manual_seed(0)
    host = TransformerHost(block_size=16, lifecycle=_lifecycle()).eval()
    slot = host.slots["layer0"]
    assert slot.germinate(blueprint).passed
    _perturb(slot.seed)
    while slot.stage is not stage:
        assert slot.advance(force=True).applied
    x = torch.randint(0, host.vocab_size, (4, 12), generator=torch.Generator().manual_seed(1))
    return host, slot, x


@torch.no_grad()
def test_inductor_matches_eager_with_training_seed():
    host, slot, x = _cnn_with_seed(Stage.TRAINING)
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(host, backend=counter)
    eager = host(x)
    out = compiled(x)
    assert counter.frame_count >= 1
    torch.testing.assert_close(out, eager, atol=ATOL, rtol=1e-4)
    assert out.is_contiguous() and out.shape == (4, 10)


@torch.no_grad()
def test_inductor_blending_tracks_alpha_without_recompiling():
    host, slot, x = _cnn_with_seed(Stage.BLENDING)
    slot.on_optimizer_step()
    assert slot.alpha == pytest.approx(0.25)
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(host, backend=counter)

    prev = compiled(x)
    torch.testing.assert_close(prev, host(x), atol=ATOL, rtol=1e-4)
    frames = counter.frame_count
    assert frames >= 1

    # the ramp, one optimizer step at a time
    for expected_alpha in (0.5, 0.75, 1.0):
        slot.on_optimizer_step()
        assert slot.alpha == pytest.approx(expected_alpha)
        out = compiled(x)
        assert counter.frame_count == frames, f"alpha {slot.alpha} recompiled"
        torch.testing.assert_close(out, host(x), atol=ATOL, rtol=1e-4)
        assert not torch.allclose(out, prev, atol=1e-6), "output did not follow alpha"
        prev = out

    # writing the buffer directly
    slot.alpha_t.fill_(0.4)
    out = compiled(x)
    assert counter.frame_count == frames
    torch.testing.assert_close(out, host(x), atol=ATOL, rtol=1e-4)
    assert not torch.allclose(out, prev, atol=1e-6)

    # the counterfactual (alpha forced to 0) is the seedless host, still the same graph
    with slot.counterfactual():
        cf = compiled(x)
        seedless = host(x)
    assert counter.frame_count == frames
    torch.testing.assert_close(cf, seedless, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(compiled(x), out, atol=0, rtol=0)  # restored


@torch.no_grad()
@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_alpha_changes_do_not_recompile_eager_backend(topology):
    build = _cnn_with_seed if topology == "cnn" else _transformer_with_seed
    host, slot, x = build(Stage.BLENDING)
    counter = CompileCounter()
    compiled = torch.compile(host, backend=counter)
    outs = [compiled(x)]
    frames = counter.frame_count
    for _ in range(4):
        slot.on_optimizer_step()
        outs.append(compiled(x))
        torch.testing.assert_close(outs[-1], host(x), atol=ATOL, rtol=1e-4)
    assert slot.alpha == 1.0
    assert counter.frame_count == frames
    assert not torch.allclose(outs[0], outs[-1], atol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_stage_change_recompiles_and_is_not_stale(topology):
    """TRAINING (output == host) → BLENDING at alpha > 0 (output != host): the compiled model must
    notice. A compiled model that kept the TRAINING graph would silently ignore the seed."""
    build = _cnn_with_seed if topology == "cnn" else _transformer_with_seed
    host, slot, x = build(Stage.TRAINING)
    counter = CompileCounter()
    compiled = torch.compile(host, backend=counter)
    training_out = compiled(x)
    torch.testing.assert_close(training_out, host(x), atol=ATOL, rtol=1e-4)
    frames = counter.frame_count

    assert slot.advance(force=True).applied
    assert slot.stage is Stage.BLENDING
    slot.on_optimizer_step()
    slot.on_optimizer_step()
    assert slot.alpha == pytest.approx(0.5)
    eager = host(x)
    assert not torch.allclose(eager, training_out, atol=1e-4), "seed has no effect: vacuous"
    out = compiled(x)
    torch.testing.assert_close(out, eager, atol=ATOL, rtol=1e-4, msg=lambda m: f"stale compiled graph: {m}")
    assert counter.frame_count > frames, "a stage change must recompile"


@torch.no_grad()
@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_compiled_output_follows_every_stage(topology):
    """Walk the lifecycle under one compiled model; after every move it agrees with eager."""
    build = _cnn_with_seed if topology == "cnn" else _transformer_with_seed
    host, slot, x = build(Stage.GERMINATED)
    compiled = torch.compile(host, backend=CompileCounter())
    seedless = host(x)
    torch.testing.assert_close(compiled(x), seedless, atol=ATOL, rtol=1e-4)
    for stage in (Stage.TRAINING, Stage.BLENDING, Stage.SHADOWING, Stage.PROBATIONARY):
        assert slot.advance(force=True).applied and slot.stage is stage
        if stage is Stage.BLENDING:
            slot.on_optimizer_step()
        torch.testing.assert_close(compiled(x), host(x), atol=ATOL, rtol=1e-4, msg=lambda m: f"{stage}: {m}")
    assert slot.cull("done").allowed
    torch.testing.assert_close(compiled(x), seedless, atol=ATOL, rtol=1e-4, msg=lambda m: f"CULLED: {m}")
