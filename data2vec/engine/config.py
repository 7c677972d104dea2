"""The configuration of the pretraining loop (`PretrainConfig`), what the loop needs of a method
(`PretrainMethod`), and the error a run stops with on purpose (`TrainingAborted`).

Differences from the original: fairseq spreads these settings over its optimisation, checkpoint and
distributed config groups; here they are one typed dataclass whose `validate` names each problem and its fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor, nn

from ..config import config_error
from ..schedules import PRETRAIN_SCHEDULES


class PretrainMethod(Protocol):
    """What `pretrain` needs of a method, besides being an `nn.Module` (data2vec.v1.Data2Vec,
    data2vec.v2.Data2Vec2, baselines.BertMLM, baselines.DINO all follow it)."""

    cfg: Any  # the method's dataclass configuration (saved in config.json and checked on --resume)
    backbone: nn.Module  # the student encoder that fine-tuning keeps

    def forward(self, batch: Any) -> tuple[Tensor, dict[str, Tensor | float]]:
        """-> (loss, statistics): 0-dim tensors or floats; the engine reduces and moves them in one transfer."""
        ...

    def step_hook(self, step: int, total_steps: int) -> dict[str, float]:
        """Called right after optimiser step `step` (0-based): the EMA teacher update; returns values to log."""
        ...


@dataclass
class PretrainConfig:
    """Everything the loop needs; defaults follow data2vec-text (paper section 4.2, released config)."""

    steps: int = 1000  # optimiser updates (the paper: 1M text, 800 epochs vision; CPU runs: hundreds)
    batch_size: int = 32  # samples per process per micro-batch; global = batch_size * grad_accum * world
    grad_accum: int = 1  # micro-batches per update (raise it to reach a larger global batch on one device)
    lr: float = 2e-4  # peak lr (text 2e-4, vision 2e-3 at batch 2048); scale it linearly with the global batch
    min_lr: float = 0.0  # final lr of the cosine (vision: 1e-5)
    warmup_steps: int | None = None  # None = 10% of `steps`; fewer steps of warm-up often diverge
    weight_decay: float = 0.01  # AdamW decay (text 0.01, vision 0.05), never on biases/norms/tokens/positions
    betas: tuple[float, float] = (0.9, 0.98)  # Adam betas (text 0.9/0.98, vision 0.9/0.999)
    eps: float = 1e-6  # Adam epsilon (fairseq/data2vec 1e-6)
    clip_norm: float = 5.0  # max gradient L2 norm (text 5 released, vision 3); 0 = no clipping
    schedule: str = "cosine"  # "cosine" (warm-up then cosine), "tri_stage" (fairseq) or "constant"
    tri_stage_fracs: tuple[float, float, float] = (0.1, 0.4, 0.5)  # warm-up/hold/decay fractions (fairseq)
    bf16: bool = False  # bf16 autocast (CUDA and CPU): the weights, the EMA average and the optimiser stay fp32
    compile: bool = False  # torch.compile the method's forward (faster on GPU after a slow first step)
    save_every: int = 0  # checkpoint every N updates (0 = only at the end and on SIGINT/SIGTERM)
    log_every: int = 10  # console line every N updates (metrics.jsonl always has every update)
    max_nonfinite: int = 5  # stop after this many non-finite losses in a row (each one skips its update)
    seed: int = 1  # seeds init, data order, masks, dropout and augmentations
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    num_workers: int = 0  # DataLoader workers (each sample is seeded, so results do not depend on it)
    find_unused_parameters: bool = False  # DDP: needed when some trainable parameter gets no gradient (DINO)
    quiet: bool = False  # no progress bar / console lines
    plots: bool = True  # write plots/*.png at each checkpoint and at the end
    # representation health (docs/health.md): a pass over a fixed probe batch after update 1, every
    # `health_every` updates and after the last one; it never touches the training RNG or the losses
    health_every: int = 100  # updates between health passes (0 = off); its cost is in docs/health.md
    health_probe_size: int = 64  # samples in the fixed probe batch (seeded indices of the data, same on resume)
    health_max_anisotropy: float = 0.6  # text runs: stop when the probe tokens' mean cosine stays above this
    #   (0 = off); the bound lies between healthy runs and layer-norm-target collapses (docs/health.md). Not
    #   applied to images: a randomly initialised ViT already sits anywhere from ~0 to ~0.75 by architecture
    health_min_effective_rank: float = 0.0  # stop when RankMe / min(N, D) of the probe tokens (a FRACTION of the
    #   width D for a probe of more tokens than D) stays below this (0 = off, the default: a healthy vision run
    #   from random init starts far below any useful text bound; docs/health.md)
    health_warmup_steps: int | None = None  # updates before the health thresholds apply (None = 5 x the lr
    #   warm-up: healthy text runs pass a transient of high anisotropy around the lr peak and settle after it)
    health_patience: int = 2  # consecutive health passes past a threshold before the run stops

    @property
    def resolved_warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else max(1, self.steps // 10)

    @property
    def resolved_health_warmup(self) -> int:
        return self.health_warmup_steps if self.health_warmup_steps is not None else 5 * self.resolved_warmup

    def validate(self) -> None:
        def fail(field_name, problem, fix):
            raise config_error("PretrainConfig", field_name, problem, f"fix: {fix}")

        for name in ("steps", "batch_size", "grad_accum", "max_nonfinite"):
            if getattr(self, name) < 1:
                fail(name, f"must be >= 1, got {getattr(self, name)}", "use a positive integer")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            fail("lr", f"need 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}",
                 "e.g. --lr 5e-4 --min-lr 1e-5")
        if not 0 <= self.resolved_warmup < self.steps:
            fail("warmup_steps", f"{self.resolved_warmup} warm-up steps do not fit in {self.steps} steps",
                 "use fewer warm-up steps than --steps (about 10%)")
        if self.schedule not in PRETRAIN_SCHEDULES:
            fail("schedule", f"unknown schedule {self.schedule!r}", f"use one of {PRETRAIN_SCHEDULES}")
        for name in ("clip_norm", "weight_decay", "save_every", "log_every", "num_workers", "health_every"):
            if getattr(self, name) < 0:
                fail(name, f"must be >= 0, got {getattr(self, name)}", "use 0 to turn it off")
        if self.resolved_health_warmup < 0:
            fail("health_warmup_steps", f"must be >= 0, got {self.health_warmup_steps}", "use 0 or leave it unset")
        if self.health_probe_size < 2:
            fail("health_probe_size", f"must be >= 2, got {self.health_probe_size}", "e.g. 64 samples")
        if self.health_patience < 1:
            fail("health_patience", f"must be >= 1, got {self.health_patience}", "e.g. 2 passes")
        for name in ("health_max_anisotropy", "health_min_effective_rank"):
            if not 0 <= getattr(self, name) <= 1:
                fail(name, f"must be in [0, 1] (0 = off), got {getattr(self, name)}", "e.g. 0.7 / 0.02, or 0")


class TrainingAborted(RuntimeError):
    """Training stopped on purpose (non-finite losses, collapse, teacher mismatch); the message says the fix."""


VOLATILE_KEYS = ("steps", "save_every", "log_every", "quiet", "plots", "device", "compile", "num_workers",
                 "max_nonfinite", "health_every", "health_probe_size", "health_max_anisotropy",
                 "health_min_effective_rank", "health_warmup_steps", "health_patience")  # may change on --resume
