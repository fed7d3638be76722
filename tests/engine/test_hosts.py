"""Oracle tests for the hosts and the forward semantics of their slots (SPEC §2 and §4).

The heart of the ML correctness: a seed in TRAINING must be invisible to the host (same output, same
host gradients as the seedless model); BLENDING is `lerp(host, seed(x), alpha)` with the input detached
or not per the isolation policy; SHADOWING and later run `seed(x)` at full strength; counterfactuals,
causality, the parameter bookkeeping and the G0 budget behave as specified.

Every oracle is a *separate* computation (a seedless deep copy, or a hand-written forward through the
host's blocks), never the code under test itself, and each has a negative control showing the
comparison is able to fail.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine import blueprints
from engine.config import LifecycleConfig
from engine.gates import GateThresholds
from engine.hosts import CNNHost, TransformerHost
from engine.hosts.base import base_param_count, seed_parameters
from engine.lifecycle import Stage
from engine.slot import SeedSlot

TOPOLOGIES = ("cnn", "transformer")
CNN_BLUEPRINTS = blueprints.names("cnn")
TF_BLUEPRINTS = blueprints.names("transformer")
ALL_BLUEPRINTS = [("cnn", n) for n in CNN_BLUEPRINTS] + [("transformer", n) for n in TF_BLUEPRINTS]
ALL_IDS = [f"{t}-{n}" for t, n in ALL_BLUEPRINTS]
ATTENTION_BLUEPRINTS = [n for n in ("attention", "flex_attention") if blueprints.is_registered("transformer", n)]

BATCH = 4
SEQ = 16  # transformer sequence length used in most tests (< block_size 64)

# Host gradients with a TRAINING seed must equal the seedless model's "to within float tolerance".
GRAD_TOL = {"atol": 1e-7, "rtol": 1e-5}


@pytest.fixture(autouse=True)
def _keep_global_rng():
    """These tests seed torch's global RNG (seeds are built from it); leave no trace for other files."""
    with torch.random.fork_rng(devices=[]):
        yield


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def cfg(**kw) -> LifecycleConfig:
    """A LifecycleConfig with a generous G0 parameter budget unless `gates` is given.

    The default budget (all seeds ≤ 1.0 × the base host) refuses the bigger CNN blueprints in the
    small default CNNHost's last slot; these tests are about forward/backward semantics, not budgets.
    """
    kw.setdefault("gates", GateThresholds(param_budget_fraction=100.0))
    return LifecycleConfig(**kw)


def make_host(topology: str, lifecycle: LifecycleConfig | None = None, **kw) -> nn.Module:
    """A freshly initialised host with a fixed RNG state (so two calls give identical weights)."""
    torch.manual_seed(0)
    lifecycle = lifecycle or cfg()
    if topology == "cnn":
        return CNNHost(lifecycle=lifecycle, **kw)
    return TransformerHost(lifecycle=lifecycle, **kw)


def make_batch(host: nn.Module, seed: int = 1, batch: int = BATCH, seq: int = SEQ):
    """(inputs, targets) for `host`: 8x8 images with 10 classes, or token ids with next-token targets."""
    gen = torch.Generator().manual_seed(seed)
    if host.topology == "cnn":
        in_ch = host.blocks[0][0].in_channels
        x = torch.randn(batch, in_ch, 8, 8, generator=gen)
        y = torch.randint(0, host.head.out_features, (batch,), generator=gen)
    else:
        x = torch.randint(0, host.vocab_size, (batch, seq), generator=gen)
        y = torch.randint(0, host.vocab_size, (batch, seq), generator=gen)
    return x, y


def loss_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def perturb(module: nn.Module, seed: int = 7, scale: float = 0.2) -> None:
    """Add noise to every parameter, so zero-initialised last layers are not zero (else vacuous)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def grow(slot: SeedSlot, blueprint: str, stage: Stage, *, seed: int = 7, perturbed: bool = True) -> None:
    """Germinate `blueprint` into `slot`, perturb it, and force it along the happy path to `stage`."""
    torch.manual_seed(100 + seed)  # seeds are built from the global RNG: keep it reproducible
    result = slot.germinate(blueprint)
    assert result.passed, result.reason
    assert slot.stage is Stage.GERMINATED
    if perturbed:
        perturb(slot.seed, seed=seed)
    while slot.stage is not stage:
        before = slot.stage
        result = slot.advance(force=True)
        assert result.applied, (before, result.reason)
        assert slot.stage is not before
    assert slot.seed is not None


def set_alpha_steps(slot: SeedSlot, steps: int) -> None:
    """Advance the BLENDING ramp by `steps` optimizer steps (the honest way to move alpha)."""
    assert slot.stage is Stage.BLENDING
    for _ in range(steps):
        slot.on_optimizer_step()


def host_named_grads(host: nn.Module) -> dict[str, torch.Tensor | None]:
    """Gradients of the host's own parameters, by name (live seeds live under `slots.` and are skipped)."""
    return {n: p.grad for n, p in host.named_parameters() if not n.startswith("slots.")}


def forward_backward(host: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    host.zero_grad(set_to_none=True)
    out = host(x)
    loss_of(out, y).backward()
    return out.detach()


def assert_host_grads_equal(a: nn.Module, b: nn.Module) -> None:
    ga, gb = host_named_grads(a), host_named_grads(b)
    assert ga.keys() == gb.keys()
    assert ga, "no host parameters found"
    for name in ga:
        assert gb[name] is not None, f"seedless model has no gradient for {name}"
        assert ga[name] is not None, f"host parameter {name} lost its gradient with a seed attached"
        torch.testing.assert_close(ga[name], gb[name], **GRAD_TOL, msg=lambda m: f"{name}: {m}")


def host_grads_differ(a: nn.Module, b: nn.Module, names: list[str] | None = None) -> list[str]:
    """Names of host parameters whose gradients differ beyond the oracle tolerance."""
    ga, gb = host_named_grads(a), host_named_grads(b)
    out = []
    for name in names or list(ga):
        if ga[name] is None or gb[name] is None:
            if (ga[name] is None) != (gb[name] is None):
                out.append(name)
            continue
        if not torch.allclose(ga[name], gb[name], **GRAD_TOL):
            out.append(name)
    return out


def assert_seed_grads_nonzero(slot: SeedSlot) -> None:
    for name, p in slot.seed.named_parameters():
        assert p.grad is not None, f"{slot.slot_id} seed parameter {name} got no gradient"
        assert torch.isfinite(p.grad).all()
        assert p.grad.abs().sum() > 0, f"{slot.slot_id} seed parameter {name} got an all-zero gradient"


def slot_list(host: nn.Module) -> list[SeedSlot]:
    return list(host.slots.values())


def reference_forward(
    host: nn.Module, inp: torch.Tensor, slot_fn: Callable[[SeedSlot, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """An independent forward pass through the host's blocks, with `slot_fn(slot, x)` at every slot.

    Written from the design (a CNN slot inside every block, after its conv-BN-ReLU and before its
    pool; a slot after every Transformer layer), so a host that wires its slots wrongly disagrees.
    """
    if host.topology == "cnn":
        x = inp.contiguous(memory_format=torch.channels_last)
        slots = slot_list(host)
        assert len(slots) == len(host.blocks) == len(host.pools)
        for i, (block, slot) in enumerate(zip(host.blocks, slots)):
            x = slot_fn(slot, block(x))
            if i < len(host.blocks) - 1:
                x = F.max_pool2d(x, 2, ceil_mode=True)
        return host.head(x.mean(dim=(2, 3)))
    t = inp.shape[1]
    x = host.tok(inp) + host.pos(torch.arange(t))
    slots = slot_list(host)
    assert len(slots) == len(host.layers)
    for layer, slot in zip(host.layers, slots):
        x = slot_fn(slot, layer(x))
    return host.head(host.ln_f(x))


def identity_fn(slot: SeedSlot, x: torch.Tensor) -> torch.Tensor:
    return x


def seed_fn(slot: SeedSlot, x: torch.Tensor) -> torch.Tensor:
    """seed(x) at a slot with a seed; identity at an empty one."""
    return x if slot.seed is None else slot.seed(x)


def lerp_fn(slot: SeedSlot, x: torch.Tensor) -> torch.Tensor:
    """lerp(x, seed(x), alpha) at a slot with a seed; identity at an empty one."""
    if slot.seed is None:
        return x
    return torch.lerp(x, slot.seed(x), torch.tensor(slot.alpha, dtype=x.dtype))


class SlotTap:
    """Forward hook on a slot: keeps its input and output (with retained gradients)."""

    def __init__(self, slot: SeedSlot, retain: bool = False) -> None:
        self.retain = retain
        self.inp: torch.Tensor | None = None
        self.out: torch.Tensor | None = None
        self.handle = slot.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.inp, self.out = args[0], output
        if self.retain:
            if self.inp.requires_grad:
                self.inp.retain_grad()
            if self.out.requires_grad:
                self.out.retain_grad()

    def remove(self) -> None:
        self.handle.remove()


# --------------------------------------------------------------------------------------------------
# 1. STE isolation oracle (TRAINING)
# --------------------------------------------------------------------------------------------------


def _isolation_pair(topology: str, placements: dict[str, str]):
    """Host A with TRAINING seeds at `placements` (slot → blueprint), and its seedless deep copy B."""
    a = make_host(topology)
    a.train()
    b = copy.deepcopy(a)
    for i, (slot_id, bp) in enumerate(placements.items()):
        grow(a.slots[slot_id], bp, Stage.TRAINING, seed=41 + i)
    # The copy is really seedless and wired to its own slots (a shared slot would make this vacuous).
    for slot_id, slot in b.slots.items():
        assert slot.seed is None and slot.stage is Stage.DORMANT
        assert slot is not a.slots[slot_id]
    wired = [slot for _, slot, _ in b._stages] if b.topology == "cnn" else list(b._slot_after)
    assert all(slot is b.slots[slot.slot_id] for slot in wired)
    return a, b


@pytest.mark.parametrize(("topology", "blueprint"), ALL_BLUEPRINTS, ids=ALL_IDS)
def test_training_seed_is_invisible_to_host_single(topology, blueprint):
    for slot_id in make_host(topology).slots:
        a, b = _isolation_pair(topology, {slot_id: blueprint})
        slot = a.slots[slot_id]
        # The perturbation makes the seed's delta non-zero: the STE is what hides it.
        x, y = make_batch(a)
        tap = SlotTap(slot)
        with torch.no_grad():
            a(x)
        tap.remove()
        assert not torch.equal(slot.seed(tap.inp), tap.inp), "seed is still identity: test would be vacuous"

        out_a = forward_backward(a, x, y)
        out_b = forward_backward(b, x, y)
        assert torch.equal(out_a, out_b), f"{slot_id}: output with a TRAINING seed differs from the host"
        assert_host_grads_equal(a, b)
        assert_seed_grads_nonzero(slot)
        # The host's bookkeeping agrees with the names used above.
        assert {id(p) for p in a.host_parameters()} == {
            id(p) for n, p in a.named_parameters() if not n.startswith("slots.")
        }


@pytest.mark.parametrize(("topology", "blueprint"), ALL_BLUEPRINTS, ids=ALL_IDS)
def test_training_seed_gets_the_full_upstream_gradient(topology, blueprint):
    """Seed parameter gradients == vjp of seed(x.detach()) with the gradient arriving at the slot output."""
    host = make_host(topology)
    host.train()
    slot = slot_list(host)[0]
    grow(slot, blueprint, Stage.TRAINING)
    tap = SlotTap(slot, retain=True)
    x, y = make_batch(host)
    forward_backward(host, x, y)
    tap.remove()
    g_out = tap.out.grad
    assert g_out is not None and g_out.abs().sum() > 0
    params = list(slot.seed.parameters())
    got = [p.grad.clone() for p in params]
    expected = torch.autograd.grad(slot.seed(tap.inp.detach()), params, g_out)
    for (name, _), g, e in zip(slot.seed.named_parameters(), got, expected):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-5, msg=lambda m: f"{name}: {m}")


def _pairs(names: list[str]) -> list[tuple[str, str]]:
    return [(names[i], names[(i + 1) % len(names)]) for i in range(len(names))]


TWO_SEED_CASES = [("cnn", p) for p in _pairs(CNN_BLUEPRINTS)] + [("transformer", p) for p in _pairs(TF_BLUEPRINTS)]


@pytest.mark.parametrize(
    ("topology", "pair"), TWO_SEED_CASES, ids=[f"{t}-{p[0]}+{p[1]}" for t, p in TWO_SEED_CASES]
)
def test_training_seeds_in_two_slots_are_invisible_to_host(topology, pair):
    slot_ids = list(make_host(topology).slots)[:2]
    a, b = _isolation_pair(topology, dict(zip(slot_ids, pair)))
    x, y = make_batch(a, seed=3)
    out_a = forward_backward(a, x, y)
    out_b = forward_backward(b, x, y)
    assert torch.equal(out_a, out_b)
    assert_host_grads_equal(a, b)
    for slot_id in slot_ids:
        assert a.slots[slot_id].stage is Stage.TRAINING
        assert_seed_grads_nonzero(a.slots[slot_id])


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_isolation_oracle_negative_control_blending_without_detach(topology):
    """The oracle can fail: a BLENDING seed at alpha > 0 without detach changes the host's gradients."""
    lc = cfg(blend_detach=False, blend_steps=4, alpha_curve="linear")
    a = make_host(topology, lc)
    b = copy.deepcopy(a)
    slot_id = next(iter(a.slots))
    slot = a.slots[slot_id]
    assert slot.blend_detach is False
    bp = "conv_light" if topology == "cnn" else "mlp"
    grow(slot, bp, Stage.BLENDING)
    set_alpha_steps(slot, 2)
    assert slot.alpha == pytest.approx(0.5)
    x, y = make_batch(a)
    forward_backward(a, x, y)
    forward_backward(b, x, y)
    differ = host_grads_differ(a, b)
    assert differ, "host gradients did not change with a blended seed: the oracle cannot detect leaks"


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_isolation_oracle_negative_control_leaky_ste(topology):
    """The oracle detects a missing input detach: an STE whose seed sees the *attached* host input keeps
    the host's output but changes its gradients. (Simulated with a hook; the engine is not modified.)"""
    slot_id = next(iter(make_host(topology).slots))
    bp = "conv_light" if topology == "cnn" else "mlp"
    a, b = _isolation_pair(topology, {slot_id: bp})
    slot = a.slots[slot_id]

    def leaky(module, args, output):
        x = args[0]
        s = module.seed(x)  # no x.detach(): the seed's Jacobian leaks into the host
        return x + (s - s.detach())

    handle = slot.register_forward_hook(leaky)
    x, y = make_batch(a)
    out_a = forward_backward(a, x, y)
    out_b = forward_backward(b, x, y)
    handle.remove()
    assert torch.equal(out_a, out_b)  # the value is still the host's ...
    assert host_grads_differ(a, b), "... but the host gradients must differ, or the oracle is blind"


# --------------------------------------------------------------------------------------------------
# 2. BLENDING and the isolation policy
# --------------------------------------------------------------------------------------------------


def test_isolation_policy_defaults_and_override():
    assert all(s.blend_detach is True for s in CNNHost().slots.values())
    assert all(s.blend_detach is False for s in TransformerHost().slots.values())
    cnn = CNNHost(lifecycle=LifecycleConfig(blend_detach=False))
    assert all(s.blend_detach is False for s in cnn.slots.values())
    tf = TransformerHost(lifecycle=LifecycleConfig(blend_detach=True))
    assert all(s.blend_detach is True for s in tf.slots.values())
    assert LifecycleConfig().detach_for("cnn") is True
    assert LifecycleConfig().detach_for("transformer") is False


def _blending_host(topology: str, detach: bool | None, bp: str):
    host = make_host(topology, cfg(blend_detach=detach, blend_steps=10, alpha_curve="linear"))
    host.train()
    slot = slot_list(host)[0]
    grow(slot, bp, Stage.BLENDING)
    set_alpha_steps(slot, 3)
    assert slot.alpha == pytest.approx(0.3)
    return host, slot


BLEND_CASES = [
    ("cnn", None, True),  # CNN default: detach
    ("cnn", False, False),  # overridden
    ("transformer", None, False),  # Transformer default: no detach
    ("transformer", True, True),  # overridden
]


@pytest.mark.parametrize(("topology", "setting", "expect_detach"), BLEND_CASES)
def test_blending_output_and_input_gradient_follow_policy(topology, setting, expect_detach):
    """At the slot: output == lerp(x, seed(x), alpha); d loss/dx == (1-alpha) g (detach) or
    (1-alpha) g + alpha J_seed^T g (no detach), where g = d loss / d(slot output)."""
    bp = "conv_light" if topology == "cnn" else "mlp"
    host, slot = _blending_host(topology, setting, bp)
    assert slot.blend_detach is expect_detach
    tap = SlotTap(slot, retain=True)
    x, y = make_batch(host)
    forward_backward(host, x, y)
    tap.remove()
    alpha = slot.alpha_t.detach()
    assert float(alpha) == pytest.approx(slot.alpha)

    xin = tap.inp.detach()
    with torch.no_grad():
        expected_out = torch.lerp(xin, slot.seed(xin), alpha)
    torch.testing.assert_close(tap.out.detach(), expected_out, atol=1e-6, rtol=1e-5)

    g_out = tap.out.grad
    assert g_out is not None and g_out.abs().sum() > 0
    blocked = (1 - alpha) * g_out
    xs = xin.clone().requires_grad_(True)
    (vjp,) = torch.autograd.grad(slot.seed(xs), xs, g_out)
    through_seed = blocked + alpha * vjp
    assert not torch.allclose(blocked, through_seed, atol=1e-6), "seed Jacobian term is zero: vacuous"
    expected_grad = blocked if expect_detach else through_seed
    torch.testing.assert_close(tap.inp.grad, expected_grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_blending_detach_changes_upstream_grads_only(topology):
    """Same weights, same seed, same alpha; only the policy differs. Outputs are identical, parameters
    downstream of the slot get identical gradients, upstream ones differ (the seed path)."""
    bp = "conv_light" if topology == "cnn" else "mlp"
    det, slot_d = _blending_host(topology, True, bp)
    nodet, slot_n = _blending_host(topology, False, bp)
    for (n1, p1), (n2, p2) in zip(det.state_dict().items(), nodet.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    x, y = make_batch(det)
    out_d = forward_backward(det, x, y)
    out_n = forward_backward(nodet, x, y)
    torch.testing.assert_close(out_d, out_n, atol=0, rtol=0)

    names = list(host_named_grads(det))
    if topology == "cnn":  # slot block1 sits after blocks.1
        upstream = [n for n in names if n.startswith(("blocks.0.", "blocks.1."))]
        downstream = [n for n in names if n.startswith(("blocks.2.", "head."))]
    else:  # slot layer0 sits after layers.0 (tok is tied to the head: both sides, skipped)
        upstream = [n for n in names if n.startswith(("layers.0.", "pos."))]
        downstream = [n for n in names if n.startswith(("layers.1.", "ln_f."))]
    assert upstream and downstream
    assert not host_grads_differ(det, nodet, downstream)
    assert set(host_grads_differ(det, nodet, upstream)), "no-detach must send seed gradients upstream"
    # the seed itself learns either way
    assert_seed_grads_nonzero(slot_d)
    assert_seed_grads_nonzero(slot_n)


# --------------------------------------------------------------------------------------------------
# 3. Alpha semantics in the forward pass (against the independent reference forward)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_reference_forward_matches_seedless_host(topology):
    host = make_host(topology).eval()
    x, _ = make_batch(host)
    with torch.no_grad():
        assert torch.equal(host(x), reference_forward(host, x, identity_fn))


@pytest.mark.parametrize(("topology", "blueprint"), ALL_BLUEPRINTS, ids=ALL_IDS)
def test_forward_at_each_stage(topology, blueprint):
    host = make_host(topology, cfg(blend_steps=4, alpha_curve="linear")).eval()
    seedless = copy.deepcopy(host)
    x, _ = make_batch(host)
    slot = slot_list(host)[-1]
    calls = []
    with torch.no_grad():
        expected_host = seedless(x)

        torch.manual_seed(5)
        assert slot.germinate(blueprint).passed
        perturb(slot.seed)
        hook = slot.seed.register_forward_hook(lambda *a: calls.append(1))
        # GERMINATED: identity, and the seed is not run at all
        assert torch.equal(host(x), expected_host)
        assert calls == []

        assert slot.advance(force=True).applied  # TRAINING: value is the host's
        assert torch.equal(host(x), expected_host)
        assert calls, "a TRAINING seed must run (it learns behind the host)"

        assert slot.advance(force=True).applied  # BLENDING at alpha 0: exactly the host
        assert slot.stage is Stage.BLENDING and slot.alpha == 0.0
        assert torch.equal(host(x), expected_host)

        slot.on_optimizer_step()  # alpha 0.25: lerp(host, seed(x), alpha), and not the host any more
        blended = host(x)
        torch.testing.assert_close(blended, reference_forward(host, x, lerp_fn), atol=1e-6, rtol=1e-5)
        assert not torch.allclose(blended, expected_host, atol=1e-6), "seed delta is zero: vacuous"

        full = reference_forward(host, x, seed_fn)
        for _ in range(3):  # ramp complete: alpha 1 is seed(x) exactly
            slot.on_optimizer_step()
        assert slot.alpha == 1.0
        assert torch.equal(host(x), full)

        for stage in (Stage.SHADOWING, Stage.PROBATIONARY, Stage.FOSSILIZED):
            assert slot.advance(force=True).applied
            assert slot.stage is stage and slot.alpha == 1.0
            assert torch.equal(host(x), full), stage

        assert not torch.allclose(full, expected_host, atol=1e-6)
    hook.remove()


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_shadowing_forced_early_runs_seed_at_full_strength(topology):
    """Forced into SHADOWING straight from BLENDING at alpha 0: alpha jumps to 1 and the slot is seed(x)."""
    host = make_host(topology).eval()
    slot = slot_list(host)[0]
    grow(slot, "attention", Stage.BLENDING)
    assert slot.alpha == 0.0
    assert slot.advance(force=True).applied
    assert slot.stage is Stage.SHADOWING and slot.alpha == 1.0
    assert float(slot.alpha_t) == 1.0
    tap = SlotTap(slot)
    x, _ = make_batch(host)
    with torch.no_grad():
        out = host(x)
        assert torch.equal(tap.out, slot.seed(tap.inp))
        assert torch.equal(out, reference_forward(host, x, seed_fn))
    tap.remove()


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_culled_seed_is_gone_from_forward(topology):
    host = make_host(topology).eval()
    seedless = copy.deepcopy(host)
    slot = slot_list(host)[0]
    grow(slot, "attention", Stage.SHADOWING)
    x, _ = make_batch(host)
    with torch.no_grad():
        assert not torch.allclose(host(x), seedless(x), atol=1e-6)
        assert slot.cull("test").allowed
        assert slot.seed is None
        assert torch.equal(host(x), seedless(x))
        slot.end_epoch()
        assert slot.stage is Stage.EMBARGOED
        assert torch.equal(host(x), seedless(x))


# --------------------------------------------------------------------------------------------------
# 4. Counterfactual
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", [Stage.BLENDING, Stage.SHADOWING, Stage.PROBATIONARY])
@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_counterfactual_equals_seedless_host_and_restores_alpha(topology, stage):
    host = make_host(topology, cfg(blend_steps=4, alpha_curve="linear")).eval()
    seedless = copy.deepcopy(host)
    slot = slot_list(host)[0]
    grow(slot, "attention", stage)
    if stage is Stage.BLENDING:
        set_alpha_steps(slot, 2)
    alpha_before = slot.alpha
    assert alpha_before > 0
    x, _ = make_batch(host)
    with torch.no_grad():
        with_seed = host(x)
        expected = seedless(x)
        assert not torch.allclose(with_seed, expected, atol=1e-6)
        with slot.counterfactual():
            assert float(slot.alpha_t) == 0.0
            assert torch.equal(host(x), expected)
        assert float(slot.alpha_t) == pytest.approx(alpha_before)
        assert slot.alpha == alpha_before
        assert slot.stage is stage
        assert torch.equal(host(x), with_seed)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_counterfactual_restores_alpha_when_body_raises(topology):
    host = make_host(topology, cfg(blend_steps=4, alpha_curve="linear"))
    slot = slot_list(host)[0]
    grow(slot, "norm", Stage.BLENDING)
    set_alpha_steps(slot, 3)
    saved = slot.alpha_t.clone()
    with pytest.raises(RuntimeError, match="boom"):
        with slot.counterfactual():
            assert float(slot.alpha_t) == 0.0
            raise RuntimeError("boom")
    assert torch.equal(slot.alpha_t, saved)
    assert float(slot.alpha_t) == pytest.approx(0.75)
    assert slot.alpha == pytest.approx(0.75)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_counterfactual_touches_only_its_own_slot(topology):
    """Two seeds; counterfactual on the first == the model with only the second seed."""
    host = make_host(topology, cfg(blend_steps=4, alpha_curve="linear")).eval()
    first, second = slot_list(host)[:2]
    bps = ("conv_light", "attention") if topology == "cnn" else ("mlp", "attention")
    grow(first, bps[0], Stage.SHADOWING, seed=1)
    grow(second, bps[1], Stage.BLENDING, seed=2)
    set_alpha_steps(second, 2)
    only_second = copy.deepcopy(host)
    assert only_second.slots[first.slot_id].cull("reference").allowed
    assert only_second.slots[first.slot_id].seed is None
    both_alphas = (first.alpha, float(second.alpha_t))
    x, _ = make_batch(host)
    with torch.no_grad():
        both = host(x)
        expected = only_second(x)
        assert not torch.allclose(both, expected, atol=1e-6)
        with first.counterfactual():
            assert float(second.alpha_t) == pytest.approx(0.5)  # the other seed is untouched
            assert torch.equal(host(x), expected)
        assert (first.alpha, float(second.alpha_t)) == both_alphas
        assert torch.equal(host(x), both)


# --------------------------------------------------------------------------------------------------
# 5. Transformer causality and block_size
# --------------------------------------------------------------------------------------------------


CAUSAL_CASES = [
    (a, Stage.BLENDING, b, Stage.SHADOWING) for a in ATTENTION_BLUEPRINTS for b in ATTENTION_BLUEPRINTS
] + [
    ("mlp", Stage.SHADOWING, ATTENTION_BLUEPRINTS[-1], Stage.BLENDING),
    (ATTENTION_BLUEPRINTS[0], Stage.TRAINING, "lora", Stage.PROBATIONARY),
]


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize(
    ("bp0", "st0", "bp1", "st1"), CAUSAL_CASES, ids=[f"{a}@{s}+{b}@{t}" for a, s, b, t in CAUSAL_CASES]
)
def test_transformer_seeds_preserve_causality(bp0, st0, bp1, st1, grad):
    host = make_host("transformer", cfg(blend_steps=4, alpha_curve="linear"))
    host.train(grad)  # no_grad runs eval (flex_attention proper on CPU); grad runs train mode
    s0, s1 = slot_list(host)
    grow(s0, bp0, st0, seed=1)
    grow(s1, bp1, st1, seed=2)
    for s in (s0, s1):
        if s.stage is Stage.BLENDING:
            set_alpha_steps(s, 2)
    gen = torch.Generator().manual_seed(9)
    t = 24
    idx = torch.randint(0, host.vocab_size, (2, t), generator=gen)
    with torch.set_grad_enabled(grad):
        base = host(idx)
        for k in (1, 7, t - 1):
            changed = idx.clone()
            changed[:, k] = (changed[:, k] + 1) % host.vocab_size
            out = host(changed)
            torch.testing.assert_close(out[:, :k], base[:, :k], atol=1e-6, rtol=1e-5)
            assert not torch.allclose(out[:, k:], base[:, k:], atol=1e-6), "change had no effect: vacuous"


def test_transformer_rejects_sequence_longer_than_block_size():
    host = TransformerHost(block_size=16)
    host(torch.zeros(1, 16, dtype=torch.long))  # exactly block_size is fine
    with pytest.raises(ValueError, match=r"17.*block_size 16|block_size"):
        host(torch.zeros(1, 17, dtype=torch.long))
    try:
        host(torch.zeros(1, 17, dtype=torch.long))
    except ValueError as e:
        msg = str(e)
        assert "17" in msg and "16" in msg and "block_size" in msg


# --------------------------------------------------------------------------------------------------
# 6. Several seeds, host/seed parameter bookkeeping, G0 occupancy and budget
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_several_seeds_with_own_stages_and_parameter_bookkeeping(topology):
    kw = {"depth": 4} if topology == "cnn" else {"n_layers": 3}
    host = make_host(topology, cfg(blend_steps=4), **kw)
    s_train, s_blend, s_fossil = slot_list(host)[-3:]
    base = {id(p) for p in host.parameters()}
    grow(s_train, "norm", Stage.TRAINING, seed=1)
    grow(s_blend, "attention", Stage.BLENDING, seed=2)
    grow(s_fossil, "norm", Stage.FOSSILIZED, seed=3)
    set_alpha_steps(s_blend, 1)
    assert [s.stage for s in (s_train, s_blend, s_fossil)] == [Stage.TRAINING, Stage.BLENDING, Stage.FOSSILIZED]
    assert s_train.alpha == 0.0 and 0 < s_blend.alpha < 1 and s_fossil.alpha == 1.0
    assert len({s.seed_id for s in (s_train, s_blend, s_fossil)}) == 3

    hp = {id(p) for p in host.host_parameters()}
    live = {id(p) for s in (s_train, s_blend) for p in s.seed.parameters()}
    fossil = {id(p) for p in s_fossil.seed.parameters()}
    assert live and fossil
    assert hp.isdisjoint(live), "seeds still on trial must not be host parameters"
    assert fossil <= hp, "a fossilized seed is part of the host"
    assert base <= hp
    assert hp == base | fossil
    assert {id(p) for p in seed_parameters(host)} == live
    assert {id(p) for p in seed_parameters(host, include_fossilized=True)} == live | fossil
    assert base_param_count(host) == sum(p.numel() for p in host.parameters() if id(p) in base)

    # all three still run together and train (forward + backward work with mixed stages)
    host.train()
    x, y = make_batch(host)
    forward_backward(host, x, y)
    for s in (s_train, s_blend, s_fossil):
        assert_seed_grads_nonzero(s)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_g0_refuses_an_occupied_slot(topology):
    host = make_host(topology)
    slot = slot_list(host)[0]
    for stage in (Stage.GERMINATED, Stage.TRAINING, Stage.FOSSILIZED):
        slot = copy.deepcopy(host).slots[slot.slot_id]
        grow(slot, "norm", stage)
        seed, seed_id = slot.seed, slot.seed_id
        slot.take_transitions()
        result = slot.germinate("attention")
        assert result.passed is False and result.gate == "G0"
        assert "slot_dormant" in {c.name for c in result.failed_checks}
        assert slot.stage is stage and slot.seed is seed and slot.seed_id == seed_id and slot.blueprint == "norm"
        assert slot.take_transitions() == []


def test_g0_param_budget_fraction():
    cfg = LifecycleConfig(gates=GateThresholds(param_budget_fraction=0.01))
    host = CNNHost(lifecycle=cfg)
    slot = host.slots["block1"]
    budget = int(0.01 * base_param_count(host))
    assert blueprints.param_count("cnn", "conv_heavy", slot.dim) > budget
    result = slot.germinate("conv_heavy")
    assert result.passed is False
    failed = {c.name: c for c in result.failed_checks}
    assert set(failed) == {"param_budget"}
    assert failed["param_budget"].value == blueprints.param_count("cnn", "conv_heavy", slot.dim)
    assert failed["param_budget"].threshold == budget
    assert slot.stage is Stage.DORMANT and slot.seed is None
    # a seed that fits is accepted
    assert blueprints.param_count("cnn", "norm", slot.dim) <= budget
    assert slot.germinate("norm").passed


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_g0_budget_is_shared_between_slots_and_freed_by_cull(topology):
    probe = make_host(topology)
    first, second = slot_list(probe)[:2]
    n_first = blueprints.param_count(topology, "attention", first.dim)
    n_second = blueprints.param_count(topology, "norm", second.dim)
    base = base_param_count(probe)
    # room for the first seed and all but one parameter of the second
    fraction = (n_first + n_second - 0.5) / base
    host = make_host(topology, cfg(gates=GateThresholds(param_budget_fraction=fraction)))
    first, second = slot_list(host)[:2]
    assert first.germinate("attention").passed
    result = second.germinate("norm")
    assert not result.passed
    assert {c.name for c in result.failed_checks} == {"param_budget"}
    # culling the first frees its share of the budget
    assert first.cull("make room").allowed
    assert second.germinate("norm").passed


# --------------------------------------------------------------------------------------------------
# 7. CNNHost layout and shapes
# --------------------------------------------------------------------------------------------------


def test_cnn_host_is_channels_last_including_seeds():
    host = CNNHost(lifecycle=cfg())
    convs = [m for m in host.modules() if isinstance(m, nn.Conv2d)]
    assert convs
    for conv in convs:
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    for name in ("conv_heavy", "depthwise"):
        slot = copy.deepcopy(host).slots["block2"]
        assert slot.germinate(name).passed
        seed_convs = [m for m in slot.seed.modules() if isinstance(m, nn.Conv2d)]
        assert seed_convs
        for conv in seed_convs:
            assert conv.weight.is_contiguous(memory_format=torch.channels_last), name
    # the activations the slots see are channels_last too
    taps = [SlotTap(s) for s in host.slots.values()]
    host(torch.randn(2, 1, 8, 8))
    for tap in taps:
        assert tap.inp.is_contiguous(memory_format=torch.channels_last)
        tap.remove()


@pytest.mark.parametrize(
    ("in_channels", "size"), [(1, 8), (1, 28), (3, 32)], ids=["1x8x8", "1x28x28", "3x32x32"]
)
def test_cnn_output_shapes(in_channels, size):
    host = CNNHost(in_channels=in_channels, lifecycle=cfg())
    assert list(host.slots) == ["block0", "block1", "block2"]
    for slot_id in host.slots:
        grow(host.slots[slot_id], "conv_light", Stage.SHADOWING)
    out = host(torch.randn(3, in_channels, size, size))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()
    host.eval()
    assert host(torch.randn(1, in_channels, size, size)).shape == (1, 10)


def test_cnn_host_configurable_width_depth_classes():
    host = CNNHost(in_channels=3, num_classes=7, width=4, depth=5)
    assert list(host.slots) == [f"block{i}" for i in range(5)]
    assert [s.dim for s in host.slots.values()] == [4, 8, 16, 32, 64]
    assert host(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError):
        CNNHost(depth=0)


def test_transformer_host_slots_and_shapes():
    host = TransformerHost(lifecycle=cfg())
    assert list(host.slots) == ["layer0", "layer1"]
    assert host.head.weight is host.tok.weight  # weight tying
    idx = torch.randint(0, 128, (2, 64))
    assert host(idx).shape == (2, 64, 128)
    for slot in host.slots.values():
        grow(slot, "lora", Stage.PROBATIONARY)
    assert host(idx[:, :5]).shape == (2, 5, 128)
