"""The training objective, declared once: cross-entropy over classes or over every token.

Used by the trainer's step and by anything that must train exactly like it (the credit estimator's
shadow twin). Shapes: logits (B, K) with y (B,), or LM logits (B, T, V) with y (B, T).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def flat_logits(logits: torch.Tensor) -> torch.Tensor:
    """(B, K) stays; LM logits (B, T, V) become (B·T, V)."""
    return logits if logits.dim() == 2 else logits.reshape(-1, logits.shape[-1])


def task_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in float32 (also under bf16 autocast)."""
    return F.cross_entropy(flat_logits(logits).float(), y.reshape(-1))


def correct_per_example(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) float: 1/0 per image, or the fraction of correct tokens per LM window."""
    hits = (logits.argmax(-1) == y).float()
    return hits if hits.dim() == 1 else hits.mean(dim=tuple(range(1, hits.dim())))


class Evaluation:
    """One pass over a split: mean loss, accuracy (%), and per-example correctness on the device."""

    __slots__ = ("loss", "accuracy", "correct")

    def __init__(self, loss: float, accuracy: float, correct: torch.Tensor) -> None:
        self.loss, self.accuracy, self.correct = loss, accuracy, correct


# Turns one shard's (loss sum, targets, per-example correctness) into the whole split's (distributed
# validation: engine.distributed.Ranks.reduce_evaluation). A single process has no shard to merge.
Reduce = Callable[[torch.Tensor, int, torch.Tensor], tuple[torch.Tensor, int, torch.Tensor]]


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches, amp, reduce: Reduce | None = None) -> Evaluation:
    """Evaluate `model` (eval mode) on `batches` of (x, y). One host-device sync, at the end.

    `correct` is (N,) float on the device, in batch order: what credit estimators compare example
    by example. Accuracy counts every target (tokens for an LM), as `correct_per_example` does.
    With `reduce`, `batches` are this rank's shard and the result is the whole split's.
    """
    was_training = model.training
    model.eval()
    total_loss = None
    parts: list[torch.Tensor] = []
    count = 0
    try:
        for x, y in batches:
            with amp:
                logits = model(x)
            flat = flat_logits(logits).float()
            batch_loss = F.cross_entropy(flat, y.reshape(-1), reduction="sum")
            total_loss = batch_loss if total_loss is None else total_loss + batch_loss
            parts.append(correct_per_example(logits.float(), y))
            count += y.numel()
    finally:
        model.train(was_training)
    if reduce is not None:  # every rank takes part, even one whose shard was empty
        device = next(model.parameters()).device
        total, correct = (total_loss if total_loss is not None else torch.zeros((), device=device),
                          torch.cat(parts) if parts else torch.zeros(0, device=device))
        total_loss, count, correct = reduce(total, count, correct)
        if correct.numel() == 0:
            total_loss = None
    elif total_loss is not None:
        correct = torch.cat(parts)
    if total_loss is None:
        return Evaluation(float("nan"), float("nan"), torch.zeros(0))
    loss, mean_correct = torch.stack([total_loss, correct.mean()]).tolist()
    return Evaluation(loss / max(count, 1), 100.0 * mean_correct, correct)
