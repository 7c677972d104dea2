"""The data2vec regression loss (arXiv 2202.03555, section 3.4 "Objective").

    Eq. (loss): L(y, f) = 0.5 * (y - f)^2 / beta   if |y - f| <= beta
                          |y - f| - 0.5 * beta       otherwise

i.e. Smooth L1 with transition beta (beta = 0: squared error (y - f)^2, the released code's choice for
beta = 0, not PyTorch's L1). It is applied per feature on the N masked positions, then reduced:

- "mean": average over N x D (released vision code);
- "sum":  sum over D, average over N (paper / released text code: the sum over 768 dims makes the
          loss, and so the effective learning rate, about D times larger than "mean").

`scale` multiplies the result (the released text code divides by sqrt(D) when its loss_scale is unset).

Differences from the original: fairseq sums over all masked tokens and lets the criterion divide by the
number of masked tokens; here that division happens inside ("sum" reduction), with the same value.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["regression_loss", "smooth_l1", "REDUCTIONS"]

REDUCTIONS = ("mean", "sum")


def smooth_l1(pred: Tensor, target: Tensor, beta: float) -> Tensor:
    """Element-wise Eq. (loss); beta = 0 means d^2."""
    d = pred.float() - target.float()
    if beta == 0:
        return d * d
    absd = d.abs()
    return torch.where(absd <= beta, 0.5 * d * d / beta, absd - 0.5 * beta)


def regression_loss(pred: Tensor, target: Tensor, *, beta: float, reduction: str, scale: float | None = None) -> Tensor:
    """Regression loss on (N, D) predictions and targets at the masked positions; a scalar."""
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(f"pred and target must both be (N, D) at the masked positions, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}; gather the masked positions first")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}; data2vec uses 4 (text) or 2 (vision), 0 means L2")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if pred.shape[0] == 0:
        raise ValueError("no masked positions: the loss is undefined; check the mask probability and padding")
    per_element = smooth_l1(pred, target, beta)  # (N, D)
    loss = per_element.mean() if reduction == "mean" else per_element.sum(dim=1).mean()
    return loss if scale is None else loss * scale
