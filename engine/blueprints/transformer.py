"""Transformer seed blueprints: residual (B, T, D) -> (B, T, D) modules; knows nothing of slots, lifecycle or hosts."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import register

try:  # flex_attention is optional: only registered where it imports.
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    HAS_FLEX_ATTENTION = True
except ImportError:  # pragma: no cover - depends on the torch build
    create_block_mask = flex_attention = None  # type: ignore[assignment]
    HAS_FLEX_ATTENTION = False

__all__ = [
    "HAS_FLEX_ATTENTION",
    "LayerNormSeed",
    "LoRASeed",
    "CausalSelfAttentionSeed",
    "FlexCausalSelfAttentionSeed",
    "MLPSeed",
    "num_heads",
    "lora_rank",
]

# Exactly the eager-mode performance warning flex_attention emits (CPU or no compile).
_FLEX_EAGER_WARNING = r"flex_attention called without torch\.compile\(\)"


def num_heads(dim: int) -> int:
    """Attention head count: the largest of (4, 2, 1) that divides ``dim``."""
    for h in (4, 2, 1):
        if dim % h == 0:
            return h
    return 1  # unreachable


def lora_rank(dim: int) -> int:
    """LoRA rank r = min(8, dim)."""
    return min(8, dim)


class LayerNormSeed(nn.Module):
    """y = x + s * LayerNorm(x), s a per-feature scale initialised to 0.

    The LayerNorm has no affine parameters of its own (s plays that role).
    Input/output: (B, T, D). Identity at init.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.scale = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.norm(x) * self.scale


class LoRASeed(nn.Module):
    """y = x + B(A(x)), A: D -> r, B: r -> D, r = min(8, D), no biases.

    A keeps nn.Linear's default (Kaiming-uniform) init; B starts at zero.
    Input/output: (B, T, D). Identity at init.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        rank = lora_rank(dim)
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.up(self.down(x))


class CausalSelfAttentionSeed(nn.Module):
    """Pre-norm causal self-attention: y = x + out(SDPA(q, k, v, is_causal=True)).

    norm: LayerNorm(D) (affine), qkv: Linear(D, 3D) with bias, out: Linear(D, D)
    with bias, zero-initialised. Heads = ``num_heads(D)``, head_dim = D // heads.
    Input/output: (B, T, D); position t only attends to positions <= t.
    Identity at init.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.heads = num_heads(dim)
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """(B, H, T, hd) x3 -> (B, H, T, hd), causal."""
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, t, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, hd)
        att = self._attend(q, k, v)
        return x + self.out(att.transpose(1, 2).reshape(b, t, d))


def _causal_mask(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
    return q_idx >= kv_idx


class FlexCausalSelfAttentionSeed(CausalSelfAttentionSeed):
    """Same maths (and parameter names) as CausalSelfAttentionSeed, computed with flex_attention.

    The causal BlockMask (mask_mod q_idx >= kv_idx, B=None, H=None) is cached per
    (T, device.type, device.index) in a small plain dict on the module (not state).
    Input/output: (B, T, D). Identity at init.

    FlexAttention has no backward on CPU/MPS (torch raises NotImplementedError when
    q/k/v require grad there). In that case only, the same mask_mod is evaluated
    densely and fed to SDPA as a boolean attn_mask: identical maths, trainable
    everywhere. Inference on CPU and everything on CUDA goes through flex_attention.
    """

    _MAX_CACHED_MASKS = 16

    def __init__(self, dim: int) -> None:
        if not HAS_FLEX_ATTENTION:  # pragma: no cover
            raise RuntimeError("torch.nn.attention.flex_attention is unavailable")
        super().__init__(dim)
        self._block_masks: dict[tuple[int, str, int | None], object] = {}

    def _block_mask(self, t: int, device: torch.device):
        key = (t, device.type, device.index)
        mask = self._block_masks.get(key)
        if mask is None:
            if len(self._block_masks) >= self._MAX_CACHED_MASKS:
                self._block_masks.clear()
            mask = create_block_mask(_causal_mask, None, None, t, t, device=device)
            self._block_masks[key] = mask
        return mask

    @staticmethod
    def _needs_dense_fallback(q: Tensor, k: Tensor, v: Tensor) -> bool:
        return q.device.type in ("cpu", "mps") and (
            q.requires_grad or k.requires_grad or v.requires_grad
        )

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        t = q.shape[-2]
        if self._needs_dense_fallback(q, k, v):
            idx = torch.arange(t, device=q.device)
            dense = _causal_mask(None, None, idx[:, None], idx[None, :])  # (T, T) bool
            return F.scaled_dot_product_attention(q, k, v, attn_mask=dense)
        mask = self._block_mask(t, q.device)
        if torch.compiler.is_compiling():
            return flex_attention(q, k, v, block_mask=mask)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_FLEX_EAGER_WARNING, category=UserWarning)
            return flex_attention(q, k, v, block_mask=mask)


class MLPSeed(nn.Module):
    """Pre-norm MLP: y = x + W2(gelu(W1(LayerNorm(x)))), hidden 2D, W2 zero-init.

    norm: LayerNorm(D) (affine), W1: Linear(D, 2D), W2: Linear(2D, D), both with bias.
    Input/output: (B, T, D). Identity at init.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


# ---------------------------------------------------------------------------
# Registration (order here is the order names("transformer") reports).
# ---------------------------------------------------------------------------


@register(
    "transformer",
    "norm",
    param_count=lambda d: d,
    identity_at_init=True,
    description="LayerNorm with zero-init per-feature scale (D params)",
)
def _norm(dim: int) -> nn.Module:
    return LayerNormSeed(dim)


@register(
    "transformer",
    "lora",
    param_count=lambda d: 2 * d * lora_rank(d),
    identity_at_init=True,
    description="Low-rank adapter, rank min(8, D), up-projection zero-init",
)
def _lora(dim: int) -> nn.Module:
    return LoRASeed(dim)


@register(
    "transformer",
    "attention",
    param_count=lambda d: 4 * d * d + 6 * d,
    identity_at_init=True,
    description="Pre-norm causal self-attention (SDPA), output projection zero-init",
)
def _attention(dim: int) -> nn.Module:
    return CausalSelfAttentionSeed(dim)


@register(
    "transformer",
    "mlp",
    param_count=lambda d: 4 * d * d + 5 * d,
    identity_at_init=True,
    description="Pre-norm GELU MLP, hidden 2D, output layer zero-init",
)
def _mlp(dim: int) -> nn.Module:
    return MLPSeed(dim)


if HAS_FLEX_ATTENTION:

    @register(
        "transformer",
        "flex_attention",
        param_count=lambda d: 4 * d * d + 6 * d,
        identity_at_init=True,
        description="Causal self-attention via flex_attention block mask, output zero-init",
    )
    def _flex_attention(dim: int) -> nn.Module:
        return FlexCausalSelfAttentionSeed(dim)
