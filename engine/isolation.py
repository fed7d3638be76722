"""Gradient isolation primitives: STE, blending, and grouped gradient norms. Knows nothing of stages.

Everything here is a pure tensor function that torch.compile traces without graph breaks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def ste(host: torch.Tensor, seed_out: torch.Tensor) -> torch.Tensor:
    """Straight-through: the value is exactly `host`, the backward pass reaches the seed.

    `seed_out - seed_out.detach()` is exactly zero in the forward pass, so the output equals the host
    bit for bit; its gradient w.r.t. `seed_out` is the upstream gradient. Call it with a seed that saw
    `host.detach()`, and the host's gradients are those of the seedless model.
    """
    return host + (seed_out - seed_out.detach())


def blend(host: torch.Tensor, seed_out: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """`lerp(host, seed_out, alpha)`; exact at alpha 0 (host) and 1 (seed_out).

    `alpha` is a 0-d tensor buffer: changing its value never retraces a compiled graph.
    """
    return torch.lerp(host, seed_out, alpha.to(host.dtype))


def grad_sq_norms(groups: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """Squared L2 norm of the gradients of each parameter group, as one 1-D tensor on the device.

    One `_foreach_norm` over every gradient at once (the kernel `clip_grad_norm_` uses), then a sum
    per group: no per-tensor `.item()`, no host-device sync. Parameters without a gradient count as 0.
    Shape: (len(groups),).
    """
    grads: list[torch.Tensor] = []
    sizes: list[int] = []
    for group in groups:
        g = [p.grad for p in group if p.grad is not None]
        grads.extend(g)
        sizes.append(len(g))
    device = grads[0].device if grads else torch.device("cpu")
    if not grads:
        return torch.zeros(len(sizes), device=device)
    sq = torch.stack(torch._foreach_norm(grads)).float().square()
    # Python loop over *groups* (a handful), not over tensors.
    parts = torch.split(sq, sizes)
    return torch.stack([part.sum() for part in parts])
