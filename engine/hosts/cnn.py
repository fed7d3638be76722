"""CNNHost: conv-BN-ReLU blocks with pooling and a classifier head, a seed slot after every block
but the first. Deliberately small by default so that growth has room to help. Knows nothing of
training or the lifecycle beyond holding its slots.
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
    the head is global average pooling + linear. Slots are named `block1` … `block{depth-1}` (after
    blocks 1 … depth-1). Parameters and inputs use `channels_last`, which CPU and GPU convolutions
    both prefer.
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
        if depth < 2:
            raise ValueError(f"CNNHost needs depth >= 2 to have a slot, got {depth}")
        lifecycle = lifecycle or LifecycleConfig()
        self.widths = [width * 2**i for i in range(depth)]
        blocks: list[nn.Module] = []
        c_in = in_channels
        for i, c in enumerate(self.widths):
            layers: list[nn.Module] = [
                nn.Conv2d(c_in, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            ]
            if i < depth - 1:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            blocks.append(nn.Sequential(*layers))
            c_in = c
        self.blocks = nn.ModuleList(blocks)
        self.slots = nn.ModuleDict(
            {
                f"block{i}": SeedSlot(f"block{i}", "cnn", c, (2, c, 4, 4), lifecycle)
                for i, c in enumerate(self.widths)
                if i > 0
            }
        )
        # Block index → slot (None for block 0); precomputed so forward does no string work.
        self._slot_after: tuple[SeedSlot | None, ...] = tuple(
            self.slots[f"block{i}"] if i > 0 else None for i in range(depth)
        )
        self.head = nn.Linear(self.widths[-1], num_classes)
        self.to(memory_format=torch.channels_last)
        attach_budget(self, lifecycle.gates.param_budget_fraction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        for block, slot in zip(self.blocks, self._slot_after):
            x = block(x)
            if slot is not None:
                x = slot(x)
        return self.head(x.mean(dim=(2, 3)))

    def host_parameters(self) -> list[nn.Parameter]:
        """Host-owned parameters (fossilized seeds included, seeds on trial excluded)."""
        return host_parameters(self)

    def on_optimizer_step(self) -> None:
        step_slots(self)
