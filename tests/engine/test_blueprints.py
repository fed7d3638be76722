"""Tests for engine.blueprints: every registered blueprint is checked via the registry's lister."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import engine.blueprints as bp
from engine.blueprints import registry as reg

# Which blueprints start as exact identity: ALL of them.
#   cnn:         norm (scale s = 0), attention (SE gate fc2 weight+bias = 0 -> gate
#                2*sigmoid(0) == 1 exactly), depthwise / conv_light / conv_heavy (last conv = 0)
#   transformer: norm (scale s = 0), lora (B = 0), attention / flex_attention (out proj = 0),
#                mlp (W2 = 0)
# The identity test below also checks the converse for any future entry flagged False.
EXPECTED_IDENTITY = {
    ("cnn", n) for n in ("norm", "attention", "depthwise", "conv_light", "conv_heavy")
} | {("transformer", n) for n in ("norm", "lora", "attention", "mlp", "flex_attention")}

DIMS = (8, 32)
ALL_ENTRIES = [("cnn", n) for n in bp.names("cnn")] + [
    ("transformer", n) for n in bp.names("transformer")
]
ENTRY_IDS = [f"{t}-{n}" for t, n in ALL_ENTRIES]
ATTENTION_NAMES = [n for n in ("attention", "flex_attention") if bp.is_registered("transformer", n)]


def _inputs(topology: str, dim: int, gen: torch.Generator) -> list[torch.Tensor]:
    if topology == "cnn":
        x = torch.randn(2, dim, 5, 5, generator=gen)
        return [x, x.clone().contiguous(memory_format=torch.channels_last)]
    return [torch.randn(2, 7, dim, generator=gen)]


def _perturb(module: nn.Module, gen: torch.Generator, scale: float = 0.1) -> None:
    """Add small noise to every parameter so zero-init layers don't block gradients."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture(autouse=True)
def _seeded_init():
    """Module init draws from the global stream: fix it so no test depends on the tests before it."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


# ---------------------------------------------------------------------------
# Per-blueprint behaviour (parametrised over the registry, so new entries are covered)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize(("topology", "name"), ALL_ENTRIES, ids=ENTRY_IDS)
def test_shape_and_dtype_preserved(topology, name, dim, gen):
    module = bp.create(topology, name, dim)
    for x in _inputs(topology, dim, gen):
        y = module(x)
        assert y.shape == x.shape
        assert y.dtype == x.dtype
        assert torch.isfinite(y).all()
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize(("topology", "name"), ALL_ENTRIES, ids=ENTRY_IDS)
def test_every_parameter_gets_gradient(topology, name, dim, gen):
    module = bp.create(topology, name, dim)
    params = list(module.parameters())
    assert params, f"{topology}/{name} has no parameters"
    _perturb(module, gen)
    for x in _inputs(topology, dim, gen):
        module.zero_grad(set_to_none=True)
        y = module(x)
        loss = (y * torch.randn(y.shape, generator=gen)).sum()
        loss.backward()
        for pname, p in module.named_parameters():
            assert p.grad is not None, f"{topology}/{name}.{pname}: no grad"
            assert torch.isfinite(p.grad).all(), f"{topology}/{name}.{pname}: non-finite grad"
            assert p.grad.abs().sum() > 0, f"{topology}/{name}.{pname}: all-zero grad"


@pytest.mark.parametrize("dim", (4, 5, 8, 16, 24, 32, 48, 64, 128, 256))
@pytest.mark.parametrize(("topology", "name"), ALL_ENTRIES, ids=ENTRY_IDS)
def test_param_count_is_exact(topology, name, dim):
    module = bp.create(topology, name, dim)
    actual = sum(p.numel() for p in module.parameters())
    reported = bp.param_count(topology, name, dim)
    assert isinstance(reported, int)
    assert reported == actual
    assert bp.get(topology, name).param_count(dim) == actual


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize(("topology", "name"), ALL_ENTRIES, ids=ENTRY_IDS)
def test_identity_flag_is_truthful(topology, name, dim, gen):
    blueprint = bp.get(topology, name)
    if (topology, name) in EXPECTED_IDENTITY:
        assert blueprint.identity_at_init, f"{topology}/{name} should start as identity"
    for train in (True, False):
        module = bp.create(topology, name, dim).train(train)
        for x in _inputs(topology, dim, gen):
            with torch.no_grad():
                y = module(x)
            is_identity = torch.equal(y, x) or torch.allclose(y, x, rtol=0.0, atol=1e-6)
            assert is_identity == blueprint.identity_at_init, (
                f"{topology}/{name} (train={train}): identity={is_identity}, "
                f"flag={blueprint.identity_at_init}"
            )


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize(("topology", "name"), ALL_ENTRIES, ids=ENTRY_IDS)
def test_state_changes_output_after_perturbation(topology, name, dim, gen):
    """Sanity: a seed is not stuck at identity once its parameters move."""
    module = bp.create(topology, name, dim)
    _perturb(module, gen)
    x = _inputs(topology, dim, gen)[0]
    with torch.no_grad():
        assert not torch.allclose(module(x), x, atol=1e-6)


@pytest.mark.parametrize("dim", DIMS)
def test_cnn_channels_last_matches_contiguous(dim, gen):
    for name in bp.names("cnn"):
        module = bp.create("cnn", name, dim).eval()
        _perturb(module, gen)
        x, x_cl = _inputs("cnn", dim, gen)
        with torch.no_grad():
            torch.testing.assert_close(module(x_cl), module(x), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# Transformer attention specifics
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("grad", (False, True), ids=("no_grad", "grad"))
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("name", ATTENTION_NAMES)
def test_attention_is_causal(name, dim, grad, gen):
    module = bp.create("transformer", name, dim)
    _perturb(module, gen, scale=0.5)
    x = torch.randn(2, 7, dim, generator=gen)
    x2 = x.clone()
    x2[:, 4:] += torch.randn(2, 3, dim, generator=gen)
    with torch.set_grad_enabled(grad):
        y, y2 = module(x), module(x2)
    torch.testing.assert_close(y2[:, :4], y[:, :4], rtol=0.0, atol=1e-6)
    assert not torch.allclose(y2[:, 4:], y[:, 4:], atol=1e-4)  # the future did change


def test_flex_attention_is_registered():
    from torch.nn.attention.flex_attention import flex_attention  # noqa: F401

    assert bp.is_registered("transformer", "flex_attention")


@pytest.mark.skipif(
    not bp.is_registered("transformer", "flex_attention"), reason="flex_attention unavailable"
)
@pytest.mark.parametrize("seq_len", (1, 7, 130))
@pytest.mark.parametrize("dim", DIMS)
def test_flex_attention_matches_sdpa_attention(dim, seq_len, gen, recwarn):
    flex = bp.create("transformer", "flex_attention", dim)
    ref = bp.create("transformer", "attention", dim)
    _perturb(flex, gen, scale=0.5)
    ref.load_state_dict(flex.state_dict())
    x = torch.randn(2, seq_len, dim, generator=gen)
    with torch.no_grad():  # the real flex_attention path (no CPU backward in torch)
        # Flex sums in a different order than SDPA: agreement to float32 round-off, not bitwise.
        torch.testing.assert_close(flex(x), ref(x), rtol=1e-4, atol=1e-4)
    # Training path (dense mask_mod fallback on CPU) must agree too, gradients included.
    xf = x.clone().requires_grad_(True)
    xr = x.clone().requires_grad_(True)
    yf, yr = flex(xf), ref(xr)
    torch.testing.assert_close(yf, yr, rtol=1e-5, atol=1e-5)
    w = torch.randn(yf.shape, generator=gen)
    (yf * w).sum().backward()
    (yr * w).sum().backward()
    torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-5, atol=1e-5)
    for (n, pf), (_, pr) in zip(flex.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(pf.grad, pr.grad, rtol=1e-4, atol=1e-5, msg=n)
    assert not [w for w in recwarn if "flex_attention called without" in str(w.message)]


@pytest.mark.skipif(
    not bp.is_registered("transformer", "flex_attention"), reason="flex_attention unavailable"
)
def test_flex_attention_block_mask_cache_key(gen):
    module = bp.create("transformer", "flex_attention", 8)
    with torch.no_grad():
        module(torch.randn(1, 7, 8, generator=gen))
        module(torch.randn(3, 7, 8, generator=gen))  # same T: reuses the cached mask
        module(torch.randn(1, 3, 8, generator=gen))
    assert set(module._block_masks) == {(7, "cpu", None), (3, "cpu", None)}
    assert module.state_dict().keys() == bp.create("transformer", "attention", 8).state_dict().keys()


@pytest.mark.skipif(
    not bp.is_registered("transformer", "flex_attention"), reason="flex_attention unavailable"
)
def test_flex_attention_eager_warning_suppressed(gen, monkeypatch):
    import torch.nn.attention.flex_attention as fa

    module = bp.create("transformer", "flex_attention", 8)
    x = torch.randn(1, 5, 8, generator=gen)
    # Control: calling flex_attention directly does warn (so the check below is not vacuous).
    if hasattr(fa, "_WARNINGS_SHOWN"):
        monkeypatch.setattr(fa, "_WARNINGS_SHOWN", set())
        q = torch.randn(1, 2, 5, 4, generator=gen)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fa.flex_attention(q, q, q)
        assert [w for w in caught if "flex_attention called without" in str(w.message)]
        monkeypatch.setattr(fa, "_WARNINGS_SHOWN", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            module(x)
    assert not [w for w in caught if "flex_attention called without" in str(w.message)]


# ---------------------------------------------------------------------------
# Registry behaviour
# ---------------------------------------------------------------------------


def test_names_order_is_stable():
    assert bp.names("cnn") == ["norm", "attention", "depthwise", "conv_light", "conv_heavy", "conv_wide"]
    assert bp.names("transformer") == ["norm", "lora", "attention", "mlp", "flex_attention"]
    listed = bp.names("cnn")
    listed.append("garbage")  # a copy: mutating it must not touch the registry
    assert bp.names("cnn") == listed[:-1]


def test_topologies_constant():
    assert bp.TOPOLOGIES == ("cnn", "transformer")


def test_duplicate_registration_rejected():
    before = {t: bp.names(t) for t in bp.TOPOLOGIES}
    original = bp.get("cnn", "norm")
    with pytest.raises(bp.DuplicateBlueprintError, match="norm"):

        @bp.register("cnn", "norm", param_count=lambda d: 0, identity_at_init=True, description="dup")
        def _dup(dim: int) -> nn.Module:  # pragma: no cover - never registered
            return nn.Identity()

    assert {t: bp.names(t) for t in bp.TOPOLOGIES} == before
    assert bp.get("cnn", "norm") is original


def test_register_then_remove_roundtrip():
    """A throwaway registration works end to end and is cleaned up (no garbage left)."""
    before = bp.names("cnn")
    try:

        @bp.register("cnn", "_test_identity", param_count=lambda d: 0, identity_at_init=True, description="t")
        def _ident(dim: int) -> nn.Module:
            return nn.Identity()

        assert bp.names("cnn") == before + ["_test_identity"]
        assert isinstance(bp.create("cnn", "_test_identity", 8), nn.Identity)
        assert bp.param_count("cnn", "_test_identity", 8) == 0
    finally:
        reg._REGISTRY["cnn"].pop("_test_identity", None)
    assert bp.names("cnn") == before


def test_unknown_topology_rejected():
    with pytest.raises(ValueError, match="rnn"):
        bp.register("rnn", "x", param_count=lambda d: 0, identity_at_init=True, description="")
    with pytest.raises(ValueError, match="rnn"):
        bp.names("rnn")
    with pytest.raises(ValueError):
        bp.create("rnn", "norm", 8)
    assert not bp.is_registered("rnn", "norm")


def test_unknown_name_lists_available():
    with pytest.raises(bp.UnknownBlueprintError) as info:
        bp.create("cnn", "nope", 8)
    msg = str(info.value)
    assert "cnn" in msg and "nope" in msg
    for name in bp.names("cnn"):
        assert name in msg
    assert isinstance(info.value, ValueError)
    with pytest.raises(bp.UnknownBlueprintError):
        bp.get("transformer", "nope")
    with pytest.raises(bp.UnknownBlueprintError):
        bp.param_count("transformer", "nope", 8)


def test_is_registered():
    for topology, name in ALL_ENTRIES:
        assert bp.is_registered(topology, name)
    assert not bp.is_registered("cnn", "lora")
    assert not bp.is_registered("transformer", "conv_heavy")


def test_blueprint_is_frozen_and_described():
    blueprint = bp.get("cnn", "norm")
    with pytest.raises((AttributeError, TypeError)):
        blueprint.name = "x"  # type: ignore[misc]
    for topology, name in ALL_ENTRIES:
        b = bp.get(topology, name)
        assert (b.topology, b.name) == (topology, name)
        assert b.description and "\n" not in b.description


def test_create_rejects_bad_dim():
    with pytest.raises(ValueError):
        bp.create("cnn", "norm", 0)


def test_create_returns_fresh_modules():
    a = bp.create("transformer", "lora", 16)
    b = bp.create("transformer", "lora", 16)
    assert a is not b
    assert a.down.weight.data_ptr() != b.down.weight.data_ptr()
