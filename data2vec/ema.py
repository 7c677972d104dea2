"""The EMA teacher and its schedules.

data2vec (arXiv 2202.03555, section 3.2 "Teacher parameterization"): the teacher's weights are an
exponentially moving average of the student's,

    Eq. (EMA): Delta <- tau * Delta + (1 - tau) * theta,

with tau ramped linearly from tau_0 to tau_e over the first tau_n updates and constant afterwards
(`linear_tau`). DINO (Caron et al. 2021, section 3.1 / released code) uses a cosine schedule of the
momentum from 0.996 to 1 over training (`cosine_momentum`).

What is averaged: data2vec-text averages only the Transformer blocks and shares the embeddings with
the student (paper section 3.2: "We found it more efficient and slightly more accurate to share the
parameters of the feature encoder and the positional encoder between the teacher and student");
the released vision code averages everything. `EMATeacher(scope="blocks" | "encoder")` does both.

Differences from the original: the shared parts are copies refreshed at every EMA step rather than the
same tensors, so the teacher never holds a parameter that requires grad and its state dict is complete.
Between steps (i.e. at every forward) they equal the student's, because the copy happens right after
the optimiser step. Buffers are copied, never averaged.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["ema_update_", "linear_tau", "cosine_momentum", "EMATeacher", "EMA_SCOPES"]

EMA_SCOPES = ("blocks", "encoder")


# ---------------------------------------------------------------------------------------------------
# schedules (pure functions of the step)
# ---------------------------------------------------------------------------------------------------


def linear_tau(step: int, start: float, end: float, ramp_steps: int) -> float:
    """data2vec: tau(t) = tau_end - (tau_end - tau_start) * (1 - t / ramp_steps) for t < ramp_steps,
    else tau_end. ramp_steps <= 0 means constant tau_end.
    Example (released text config): 0.999 -> 0.9999 over 300k steps gives 0.99945 at step 150k."""
    if ramp_steps <= 0 or step >= ramp_steps:
        return float(end)
    step = max(step, 0)
    return float(end - (end - start) * (1.0 - step / ramp_steps))


def cosine_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """DINO: m(t) = final - (final - base) * (cos(pi t / T) + 1) / 2, from base at t = 0 to final at t = T."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}; pass the run's number of optimiser steps")
    t = min(max(step, 0), total_steps)
    return float(final - (final - base) * (math.cos(math.pi * t / total_steps) + 1.0) / 2.0)


# ---------------------------------------------------------------------------------------------------
# the update
# ---------------------------------------------------------------------------------------------------


def _check_tau(tau: float) -> None:
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must lie in [0, 1], got {tau}; data2vec uses 0.999-0.9999")


@torch.no_grad()
def _update(teacher: nn.Module, student: nn.Module, tau: float, averaged: Callable[[str], bool]) -> None:
    t_params = dict(teacher.named_parameters())
    s_params = dict(student.named_parameters())
    if t_params.keys() != s_params.keys():
        missing = sorted(set(s_params) ^ set(t_params))[:5]
        raise ValueError(f"teacher and student have different parameters (e.g. {missing}); "
                         f"the teacher must be a copy of the student")
    for name, t in t_params.items():
        s = s_params[name].detach()
        if t.is_floating_point() and averaged(name):
            # Eq. (EMA): t <- tau * t + (1 - tau) * s
            t.mul_(tau).add_(s.to(t.dtype), alpha=1.0 - tau)
        else:
            t.copy_(s)
    t_buffers = dict(teacher.named_buffers())
    for name, s in student.named_buffers():
        if name in t_buffers:
            t_buffers[name].copy_(s)


def ema_update_(teacher: nn.Module, student: nn.Module, tau: float) -> None:
    """In place, without autograd: every floating parameter t <- tau * t + (1 - tau) * s; buffers and
    non-floating parameters copied from the student. Both modules must have the same parameter names."""
    _check_tau(tau)
    _update(teacher, student, tau, lambda name: True)


def _in_blocks(name: str) -> bool:
    """True for parameters inside the Transformer blocks (`...encoder.blocks.<i>...` or `blocks.<i>...`)."""
    parts = name.split(".")
    return "blocks" in parts


# ---------------------------------------------------------------------------------------------------
# the teacher wrapper
# ---------------------------------------------------------------------------------------------------


class EMATeacher(nn.Module):
    """An EMA copy of a student module: fp32, eval mode, no gradients.

    scope="encoder": every parameter is averaged (data2vec-vision, DINO).
    scope="blocks":  only the Transformer blocks are averaged; everything else (embeddings, positions,
                     embedding LN, relative position bias, final norm) is copied from the student at
                     every update, i.e. shared (data2vec-text, paper section 3.2).

    Call `update(student, tau)` after each optimiser step. `forward(...)` runs the copy under `torch.no_grad()`
    in the run's precision: inside a bf16 autocast region (`--precision bf16`) its products run in bf16 from the
    fp32 average, as the release runs its teacher in the training dtype (`ema_same_dtype: true`, while the average
    itself is kept in fp32, `ema_fp32`); the targets are then normalised in fp32 (`targets.build_targets`).
    """

    def __init__(self, student: nn.Module, scope: str = "encoder"):
        super().__init__()
        if scope not in EMA_SCOPES:
            raise ValueError(f"ema scope must be one of {EMA_SCOPES}, got {scope!r}: 'blocks' for text (shared "
                             f"embeddings), 'encoder' for vision (everything averaged)")
        self.scope = scope
        self.module = copy.deepcopy(student).float()
        for p in self.module.parameters():
            p.requires_grad_(False)
            p.grad = None
        if scope == "blocks" and not any(_in_blocks(n) for n, _ in self.module.named_parameters()):
            raise ValueError("ema scope 'blocks' found no parameters inside Transformer blocks; use scope='encoder'")
        self.module.eval()

    def averaged(self, name: str) -> bool:
        """Whether parameter `name` (of the wrapped module) is averaged (True) or copied (False)."""
        return self.scope == "encoder" or _in_blocks(name)

    def train(self, mode: bool = True) -> EMATeacher:
        """The teacher stays in eval mode (no dropout, no drop path) whatever the parent's mode."""
        super().train(mode)
        self.module.eval()
        return self

    def update(self, student: nn.Module, tau: float) -> None:
        """EMA step with momentum tau (call right after the optimiser step)."""
        _check_tau(tau)
        _update(self.module, student, tau, self.averaged)

    def forward(self, *args, **kwargs):
        cast = lambda x: x.float() if torch.is_tensor(x) and x.is_floating_point() else x  # noqa: E731
        args = tuple(cast(a) for a in args)
        kwargs = {k: cast(v) for k, v in kwargs.items()}
        with torch.no_grad():
            return self.module(*args, **kwargs)
