"""Learning-rate schedules as pure functions of the optimiser step, and `LRSchedule` that applies one.

What it implements
- `warmup_cosine`: linear warm-up then half-cosine decay to `final_lr` (BEiT / data2vec-vision
  fine-tuning and pretraining, MAE; data2vec paper arXiv 2202.03555, section 4.1 "cosine schedule").
- `tri_stage`: fairseq's tri-stage schedule (`fairseq/optim/lr_scheduler/tri_stage_lr_scheduler.py`,
  used by data2vec-speech/wav2vec 2.0 fine-tuning): linear warm-up from `init_scale * base_lr`, hold at
  `base_lr`, exponential decay to `final_scale * base_lr`, then constant.
- `warmup_linear`: linear warm-up then linear decay (RoBERTa's GLUE fine-tuning, fairseq `polynomial_decay`
  with power 1).
- `LRSchedule`: evaluates one of the pretraining schedules at a step and writes `lr * group["lr_scale"]` into
  every optimiser parameter group (`set_lr`; the scale carries layer-wise lr decay, see `optim.param_groups`).

Convention: `step` is the 0-based index of the optimiser step about to be taken; `warmup_cosine` reaches
`base_lr` exactly at step `warmup_steps - 1` (so step 0 already takes a small, non-zero step).

Differences from the original
- fairseq's tri-stage asserts that the three fractions sum to 1; here they may sum to less than 1 and the
  remaining steps stay at the final learning rate (a sum above 1 is an error).
- timm/BEiT's warm-up starts at lr = 0 on step 0 (a wasted step); here step 0 uses base_lr / warmup_steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

PRETRAIN_SCHEDULES = ("cosine", "tri_stage", "constant")  # `PretrainConfig.schedule`, built by `LRSchedule`
FINETUNE_SCHEDULES = ("linear", "cosine")  # `FinetuneConfig.schedule`: the decay after the warm-up


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, base_lr: float, final_lr: float = 0.0) -> float:
    """Linear warm-up over `warmup_steps`, then cosine from `base_lr` to `final_lr` at `total_steps`."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps  # linear: base_lr * (t + 1) / W
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)  # p in [0, 1]
    # lr(p) = final + (base - final) * (1 + cos(pi p)) / 2
    return final_lr + 0.5 * (base_lr - final_lr) * (1.0 + math.cos(math.pi * progress))


def warmup_linear(step: int, total_steps: int, warmup_steps: int, base_lr: float, final_lr: float = 0.0) -> float:
    """Linear warm-up from 0 to base_lr over warmup_steps, then linear decay to final_lr at total_steps.

    lr(t) = base_lr * (t + 1) / warmup                                   for t < warmup
    lr(t) = final_lr + (base_lr - final_lr) * (T - t) / (T - warmup)     after (clamped at final_lr)
    (fairseq `polynomial_decay` with power 1, RoBERTa's GLUE schedule.)
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    frac = min(1.0, (step - warmup_steps) / span)
    return final_lr + (base_lr - final_lr) * (1.0 - frac)


def tri_stage(
    step: int,
    total_steps: int,
    warmup_frac: float,
    hold_frac: float,
    decay_frac: float,
    base_lr: float,
    init_scale: float = 0.01,
    final_scale: float = 0.01,
) -> float:
    """fairseq tri-stage: warm-up (linear), hold (constant), decay (exponential), then constant."""
    fracs = (warmup_frac, hold_frac, decay_frac)
    if any(f < 0 for f in fracs) or sum(fracs) > 1.0 + 1e-9:
        raise ValueError(f"tri_stage fractions must be >= 0 and sum to at most 1, got {fracs}; "
                         "fix: e.g. warmup 0.1, hold 0.4, decay 0.5 (fairseq's usual phase ratio)")
    if not (0 < init_scale and 0 < final_scale):
        raise ValueError("tri_stage init_scale and final_scale must be > 0 (exponential decay needs a positive end)")
    warmup = int(total_steps * warmup_frac)
    hold = int(total_steps * hold_frac)
    decay = int(total_steps * decay_frac)
    init_lr, final_lr = init_scale * base_lr, final_scale * base_lr
    if step < warmup:
        return init_lr + (base_lr - init_lr) * step / warmup  # linear from init_lr
    step -= warmup
    if step < hold:
        return base_lr
    step -= hold
    if step < decay:
        decay_factor = -math.log(final_scale) / decay  # lr = base * exp(-k t), reaching final at t = decay
        return base_lr * math.exp(-decay_factor * step)
    return final_lr


def constant(step: int, total_steps: int, warmup_steps: int, base_lr: float, final_lr: float = 0.0) -> float:
    """Linear warm-up, then constant `base_lr` (for debugging a run without the decay)."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    return base_lr


@dataclass
class LRSchedule:
    """A schedule `fn(step) -> lr` applied to optimiser groups as `lr * group["lr_scale"]`."""

    fn: Callable[[int], float]
    description: dict = field(default_factory=dict)  # what built it (saved in checkpoints for inspection)

    @classmethod
    def build(cls, kind: str, *, total_steps: int, base_lr: float, warmup_steps: int = 0, final_lr: float = 0.0,
              tri_stage_fracs: tuple[float, float, float] = (0.1, 0.4, 0.5), init_scale: float = 0.01,
              final_scale: float = 0.01) -> LRSchedule:
        desc = dict(kind=kind, total_steps=total_steps, base_lr=base_lr, warmup_steps=warmup_steps, final_lr=final_lr)
        if kind == "cosine":
            fn = partial(warmup_cosine, total_steps=total_steps, warmup_steps=warmup_steps, base_lr=base_lr,
                         final_lr=final_lr)
        elif kind == "constant":
            fn = partial(constant, total_steps=total_steps, warmup_steps=warmup_steps, base_lr=base_lr)
        elif kind == "tri_stage":
            w, h, d = tri_stage_fracs
            desc.update(tri_stage_fracs=list(tri_stage_fracs), init_scale=init_scale, final_scale=final_scale)
            fn = partial(tri_stage, total_steps=total_steps, warmup_frac=w, hold_frac=h, decay_frac=d,
                         base_lr=base_lr, init_scale=init_scale, final_scale=final_scale)
        else:
            raise ValueError(f"unknown schedule {kind!r}; use one of {PRETRAIN_SCHEDULES}")
        return cls(fn, desc)

    def __call__(self, step: int) -> float:
        return self.fn(step)

    def apply(self, optimizer, step: int) -> float:
        """Set every group's lr to `lr(step) * lr_scale`; returns the unscaled lr."""
        lr = self.fn(step)
        set_lr(optimizer, lr)
        return lr

    def state_dict(self) -> dict:
        return dict(self.description)


def set_lr(optimizer, lr: float) -> None:
    """Every parameter group's lr = `lr * group["lr_scale"]` (layer-wise decay scales each group)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
