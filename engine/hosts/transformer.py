"""TransformerHost: a small pre-norm GPT (causal self-attention, weight-tied head) with a seed slot
after every layer. Knows nothing of training or the lifecycle beyond holding its slots.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import LifecycleConfig
from engine.hosts.base import attach_budget, host_parameters, step_slots
from engine.slot import SeedSlot


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention. (B, T, D) → (B, T, D)."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        # (B, T, D) → (B, H, T, D/H)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm transformer layer: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, n_heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TransformerHost(nn.Module):
    """Language model. Input token ids (B, T) with T ≤ block_size → logits (B, T, vocab_size).

    Slots are named `layer0` … `layer{n_layers-1}`, one after every layer.
    """

    topology = "transformer"

    def __init__(
        self,
        vocab_size: int = 128,
        block_size: int = 64,
        dim: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        dropout: float = 0.0,
        lifecycle: LifecycleConfig | None = None,
    ) -> None:
        super().__init__()
        lifecycle = lifecycle or LifecycleConfig()
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.tok = nn.Embedding(vocab_size, dim)
        self.pos = nn.Embedding(block_size, dim)
        self.layers = nn.ModuleList(Block(dim, n_heads, dropout) for _ in range(n_layers))
        probe = (2, min(8, block_size), dim)
        self.slots = nn.ModuleDict(
            {f"layer{i}": SeedSlot(f"layer{i}", "transformer", dim, probe, lifecycle) for i in range(n_layers)}
        )
        self._slot_after: tuple[SeedSlot, ...] = tuple(self.slots.values())
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.tok.weight  # weight tying
        self.register_buffer("positions", torch.arange(block_size), persistent=False)
        self.apply(_init_weights)
        attach_budget(self, lifecycle.gates.param_budget_fraction)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.block_size:
            raise ValueError(
                f"sequence length {t} is longer than block_size {self.block_size}; "
                "crop the input or build the host with a larger block_size"
            )
        x = self.tok(idx) + self.pos(self.positions[:t])
        for layer, slot in zip(self.layers, self._slot_after):
            x = slot(layer(x))
        return self.head(self.ln_f(x))

    def host_parameters(self) -> list[nn.Parameter]:
        """Host-owned parameters (fossilized seeds included, seeds on trial excluded)."""
        return host_parameters(self)

    def on_optimizer_step(self) -> None:
        step_slots(self)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
