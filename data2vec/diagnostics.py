"""Representation health: the collapse guard (and, as they land, the statistics it watches).

Collapse watch (data2vec paper arXiv 2202.03555, section 3; fairseq logs `target_var` / `pred_var` and
stops below `min_target_var = 0.1` / `min_pred_var = 0.01` after 5000 updates): `spread(x)` is the
standard deviation across the rows (masked tokens) of every feature, averaged over the features,
sqrt(var_n(x_nd) + 1e-6) averaged over d. `CollapseGuard` raises `CollapseError` when a watched statistic
stays below its threshold for `patience` consecutive training steps after `warmup_steps` updates.

The guard lives here, not in a method module, so the engine (which receives a method object and never
imports one) can catch `CollapseError` for every method.

Differences from the original: the variance is the population variance (fairseq: unbiased), so one masked
token does not give NaN; fairseq stops at the first low value, we wait `patience` steps.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["CollapseError", "CollapseGuard", "spread"]


class CollapseError(RuntimeError):
    """The targets or predictions became (nearly) constant across tokens: representation collapse."""


def spread(x: Tensor) -> Tensor:
    """Std across the rows of x (N, D) for every feature, averaged: mean_d sqrt(var_n(x_nd) + 1e-6).

    A 0-dim float tensor on x's device (no host sync); 0 for an empty x."""
    if x.shape[0] == 0:
        return x.new_zeros((), dtype=torch.float32)
    return torch.sqrt(x.detach().float().var(dim=0, unbiased=False) + 1e-6).mean()


class CollapseGuard:
    """Stops a run whose statistics stay below their minimum for `patience` steps after `warmup_steps`.

    `minimums` maps a statistic name (a key of the method's stats) to its threshold; a threshold of 0
    disables that statistic. `advice` is appended to the error: what to change for this method."""

    def __init__(self, minimums: dict[str, float], warmup_steps: int, patience: int, *, method: str, advice: str):
        self.minimums = {name: float(value) for name, value in minimums.items() if value > 0}
        self.warmup_steps = int(warmup_steps)
        self.patience = int(patience)
        self.method = method
        self.advice = advice
        self.steps_below = 0  # consecutive checked steps with at least one statistic under its minimum

    def check(self, num_updates: int, stats: dict[str, float]) -> None:
        """Count a low step or reset the count; raise CollapseError after `patience` low steps in a row."""
        if not self.minimums or num_updates < self.warmup_steps:
            return
        low = any(float(stats[name]) < minimum for name, minimum in self.minimums.items())
        self.steps_below = self.steps_below + 1 if low else 0
        if self.steps_below >= self.patience:
            values = ", ".join(f"{name}={float(stats[name]):.4g} (min {minimum})"
                               for name, minimum in self.minimums.items())
            raise CollapseError(f"{self.method} collapsed at update {num_updates}: {values} for {self.steps_below} "
                                f"steps; {self.advice}")
