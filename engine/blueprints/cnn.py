"""CNN seed blueprints: residual (B, C, H, W) -> (B, C, H, W) modules; knows nothing of slots, lifecycle or hosts."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .registry import register

__all__ = [
    "GroupNormSeed",
    "SqueezeExciteSeed",
    "DepthwiseSeed",
    "ConvPairSeed",
    "WIDE_HIDDEN",
    "group_count",
]


def group_count(channels: int) -> int:
    """GroupNorm group count: the largest of (8, 4, 2, 1) that divides ``channels``."""
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1  # unreachable


def _se_hidden(channels: int) -> int:
    return max(1, channels // 4)


def _half(channels: int) -> int:
    return max(1, channels // 2)


class GroupNormSeed(nn.Module):
    """y = x + s * GroupNorm(x), s a per-channel scale initialised to 0.

    GroupNorm has no affine parameters of its own (s plays that role) and uses
    ``group_count(C)`` groups. Input/output: (B, C, H, W), any memory format.
    Identity at init.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(group_count(channels), channels, affine=False)
        self.scale = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.norm(x) * self.scale[:, None, None]


class SqueezeExciteSeed(nn.Module):
    """Squeeze-excitation gate: y = x * 2*sigmoid(fc2(relu(fc1(mean_hw(x))))).

    fc1: C -> max(1, C//4), fc2: back to C, both with bias; fc2 weight and bias
    start at zero so the gate is exactly 1 (identity at init).
    Input/output: (B, C, H, W), any memory format.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = _se_hidden(channels)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: Tensor) -> Tensor:
        squeezed = x.mean(dim=(2, 3))  # (B, C); no .view, channels_last-safe
        gate = 2.0 * torch.sigmoid(self.fc2(torch.relu(self.fc1(squeezed))))
        return x * gate[:, :, None, None]


class DepthwiseSeed(nn.Module):
    """y = x + pw1x1(relu(bn(dw3x3(x)))), pw zero-initialised (identity at init).

    dw: depthwise 3x3 (groups=C, no bias); bn: BatchNorm2d(C); pw: 1x1 C -> C with bias.
    Input/output: (B, C, H, W), any H, W >= 1 (padding 1). Note: BatchNorm in
    train mode needs more than one value per channel (B*H*W > 1).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.pw = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.pw.weight)
        nn.init.zeros_(self.pw.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pw(torch.relu(self.bn(self.dw(x))))


class ConvPairSeed(nn.Module):
    """y = x + conv3x3_b(relu(bn(conv3x3_a(x)))) through a hidden layer of `hidden` channels.

    conv_a: C -> hidden (no bias), bn: BatchNorm2d(hidden), conv_b: hidden -> C with bias,
    zero-initialised (identity at init). No BN/ReLU after conv_b: the delta must be signed and
    exactly zero at init. Input/output: (B, C, H, W). `conv_light` (hidden C/2), `conv_heavy` (C,
    a basic residual block) and `conv_wide` (max(WIDE_HIDDEN, C)) differ only in the hidden width.
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(torch.relu(self.bn(self.conv1(x))))


# Hidden width of `conv_wide`, fixed whatever the slot's channel count: a narrow block (2 channels on
# digits) gets real capacity behind its shape-preserving interface. Measured on digits (host 2-4-8, seed
# in block 0 before its pool, inserted at epoch 12, 5 seeds): hidden 8 +2.6 points, 16 +3.3, 32 +3.3.
WIDE_HIDDEN = 16


def _wide(channels: int) -> int:
    return max(WIDE_HIDDEN, channels)


def _pair_params(c: int, hidden: int) -> int:
    return 18 * c * hidden + 2 * hidden + c


# ---------------------------------------------------------------------------
# Registration (order here is the order names("cnn") reports).
# ---------------------------------------------------------------------------


@register(
    "cnn",
    "norm",
    param_count=lambda c: c,
    identity_at_init=True,
    description="GroupNorm with zero-init per-channel scale (C params)",
)
def _norm(dim: int) -> nn.Module:
    return GroupNormSeed(dim)


@register(
    "cnn",
    "attention",
    param_count=lambda c: 2 * c * _se_hidden(c) + _se_hidden(c) + c,
    identity_at_init=True,
    description="Squeeze-excitation channel gate, reduction 4, gate starts at 1",
)
def _attention(dim: int) -> nn.Module:
    return SqueezeExciteSeed(dim)


@register(
    "cnn",
    "depthwise",
    param_count=lambda c: c * c + 12 * c,
    identity_at_init=True,
    description="Depthwise 3x3 + BN + ReLU + zero-init pointwise 1x1",
)
def _depthwise(dim: int) -> nn.Module:
    return DepthwiseSeed(dim)


@register(
    "cnn",
    "conv_light",
    param_count=lambda c: _pair_params(c, _half(c)),
    identity_at_init=True,
    description="Bottleneck 3x3 conv pair (C -> C/2 -> C), last conv zero-init",
)
def _conv_light(dim: int) -> nn.Module:
    return ConvPairSeed(dim, _half(dim))


@register(
    "cnn",
    "conv_heavy",
    param_count=lambda c: _pair_params(c, c),
    identity_at_init=True,
    description="Full-width 3x3 conv-BN-ReLU-conv residual block, last conv zero-init",
)
def _conv_heavy(dim: int) -> nn.Module:
    return ConvPairSeed(dim, dim)


@register(
    "cnn",
    "conv_wide",
    param_count=lambda c: _pair_params(c, _wide(c)),
    identity_at_init=True,
    description=f"3x3 conv pair through a wide hidden layer (C -> max({WIDE_HIDDEN}, C) -> C), last conv zero-init",
)
def _conv_wide(dim: int) -> nn.Module:
    return ConvPairSeed(dim, _wide(dim))
