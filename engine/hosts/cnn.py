"""CNNHost: conv-BN-ReLU blocks with pooling and a classifier head, a seed slot in every block at its
full resolution (after the ReLU, before the pool). Deliberately small by default so that growth has
room to help. Knows nothing of training or the lifecycle beyond holding its slots.

Where the slots sit was measured (issue 7): on digits the narrow first block is the host's
bottleneck, and a seed there before the first pool adds ~3 points, while seeds after the pools of
later blocks added < 1 (from scratch and inserted at epoch 12, 5 seeds each).
"""

from __future__ import annotations

import torch
from torch import nn

from engine.config import LifecycleConfig
from engine.hosts.base import attach_budget, host_parameters, step_slots
from engine.slot import SeedSlot


class CNNHost(nn.Module):
    """Image classifier. Input (B, in_channels, H, W) → logits (B, num_classes).

    Block i has `width * 2**i` channels and halves the spatial size (max-pool) except the last block;
    the head is global average pooling + linear. Slot `block{i}` sits inside block i after its
    conv-BN-ReLU and before its pool, so a seed works at the block's full resolution. Parameters and
    inputs use `channels_last`, which CPU and GPU convolutions both prefer.
    """

    topology = "cnn"

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        width: int = 8,
        depth: int = 3,
        lifecycle: LifecycleConfig | None = None,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"CNNHost needs depth >= 1, got {depth}")
        lifecycle = lifecycle or LifecycleConfig()
        self.widths = [width * 2**i for i in range(depth)]
        blocks: list[nn.Module] = []
        c_in = in_channels
        for c in self.widths:
            blocks.append(nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                                        nn.ReLU(inplace=True)))
            c_in = c
        self.blocks = nn.ModuleList(blocks)
        # The last block keeps its resolution: the head pools globally.
        self.pools = nn.ModuleList(
            [nn.MaxPool2d(2, ceil_mode=True) if i < depth - 1 else nn.Identity() for i in range(depth)]
        )
        self.slots = nn.ModuleDict(
            {f"block{i}": SeedSlot(f"block{i}", "cnn", c, (2, c, 4, 4), lifecycle) for i, c in enumerate(self.widths)}
        )
        # Block index → slot, precomputed so forward does no string work.
        self._stages: tuple[tuple[nn.Module, SeedSlot, nn.Module], ...] = tuple(
            zip(self.blocks, self.slots.values(), self.pools)
        )
        self.head = nn.Linear(self.widths[-1], num_classes)
        self.to(memory_format=torch.channels_last)
        attach_budget(self, lifecycle.gates.param_budget_fraction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        for block, slot, pool in self._stages:
            x = pool(slot(block(x)))
        return self.head(x.mean(dim=(2, 3)))

    def host_parameters(self) -> list[nn.Parameter]:
        """Host-owned parameters (fossilized seeds included, seeds on trial excluded)."""
        return host_parameters(self)

    def on_optimizer_step(self) -> None:
        step_slots(self)
