"""DINO (self-distillation with no labels) on the project's Transformer core.

What it implements (Caron et al. 2021, arXiv 2104.14294, section 3.1, Algorithm 1, appendix; released
`main_dino.py` / `vision_transformer.py`):

- `DINOHead`: MLP D -> 2048 -> 2048 -> 256 (GELU between layers), L2 normalisation, then a
  weight-normalised Linear(256 -> K) without bias whose gain g is fixed at 1 ("norm_last_layer"):
      h = MLP(x);  z = h / ||h||_2;  logits_k = (v_k / ||v_k||) . z
- `DINO`: a student (backbone + head) and a teacher, an EMA copy of *all* of the student's parameters,
  theta_t <- m theta_t + (1 - m) theta_s with m cosine-scheduled 0.996 -> 1 (`data2vec.ema`). The
  teacher sees the 2 global crops, the student every crop; features are the CLS token of the backbone's
  final (normed) output. Loss: `DINOLoss` (centring + sharpening, see dino_loss.py) with tau_t from
  `teacher_temp_schedule`.
- Last-layer freezing during the first epoch (`freeze_last_layer_steps` optimiser steps): the original
  sets the last layer's `.grad` to None after backward (`cancel_gradients_last_layer`), so the optimiser
  skips it (no update, no weight decay, no Adam state). Here a post-accumulate-grad hook on those
  parameters does the same during backward, so the training loop needs no DINO-specific call.
- Collapse watch (DINO section 5.3, Fig. 7): `teacher_entropy` (mean entropy of the teacher's
  distribution per image; near log K = uniform collapse), `teacher_batch_entropy` (entropy of the
  batch-mean distribution; near 0 = every image on one prototype) and `center_norm`.

Recipes. "base" = DINO ViT-B/16 (out_dim 65536, 2 global 224 px + 8 local 96 px crops, tau_s 0.1, tau_t
0.04 -> 0.07 over 30 epochs, momentum 0.996 -> 1, last layer frozen 1 epoch); the optimiser side of the
recipe (AdamW, lr 5e-4 * batch / 256 after 10 warm-up epochs, weight decay 0.04 -> 0.4 cosine, gradient
clipping 3.0, drop path 0.1) belongs to the training loop. Smaller presets shrink the head (out_dim 256 /
1024 / 4096) because a small data set has far fewer "prototypes" to discover.

Differences from the original
- The backbone is this project's ViT (the same one data2vec trains: BEiT-style relative position bias; layer
  scale only in "base", see the tuning notes) instead of DINO's plain ViT with learned absolute positions, so
  the methods are compared on equal footing. Local crops go through the same backbone at their smaller grid.
- Step-based schedules (teacher temperature, momentum, freezing) instead of per-epoch/per-iteration
  tables; `freeze_last_layer_steps` and `teacher_temp_warmup_steps` are given in optimiser steps (the CLI
  converts epochs to steps).
- The teacher is kept in float32 and eval mode (the original runs it in the same autocast as the student).

Tuning notes (measured on tiny runs: out_dim 64, tau_t 0.04, momentum 0.99, batch 64, 2 global + 2 local
crops of smooth random images; tests/test_dino.py's tiny run checks the same behaviour).
- Layer scale: with the vision presets' 1e-4 the CLS token is practically independent of the image at init,
  so the teacher gives every image the same output; the centre turns that into the uniform distribution
  and nothing bootstraps (teacher_entropy == teacher_batch_entropy == log K, loss -> log K). DINO's ViT has
  no layer scale, so the reduced presets set `layer_scale=None` (an explicit override still wins). Then
  the loss first rises to ~log K while the centre catches up (~20-30 steps) and then falls (3.8 -> 3.5
  over 150 steps with learned positions and init="bert", 4.1 -> 3.9 with the relative bias and "beit"),
  and teacher_entropy drops below log K while teacher_batch_entropy stays near log K: diverse outputs.
- Learning rate: 5e-4 to 1e-3 at batch 64 drives the run to the uniform collapse; use DINO's linear
  scaling rule lr = 5e-4 * global batch / 256 (1.25e-4 at 64; the CLI's default).
- Watch `teacher_entropy` (log K = uniform collapse) and `teacher_batch_entropy` (0 = one prototype);
  for short runs a shorter teacher time constant (momentum_base 0.99) helps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrizations

from data2vec.backbone import build_backbone
from data2vec.config import EncoderConfig, config_error, get_preset, split_overrides
from data2vec.ema import EMATeacher, cosine_momentum

from .dino_loss import DINOLoss, entropy, teacher_temp_schedule
from .multicrop import MultiCropTransform, collate_crops

__all__ = ["DINOHead", "DINOConfig", "DINO", "DINOLoss", "teacher_temp_schedule", "MultiCropTransform",
           "collate_crops"]


class DINOHead(nn.Module):
    """Features (B, D) -> logits (B, K): MLP -> L2 normalise -> weight-normalised Linear without bias."""

    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 nlayers: int = 3, norm_last_layer: bool = True, init_std: float = 0.02):
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"nlayers must be >= 1, got {nlayers}; DINO uses 3")
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden_dim", hidden_dim),
                            ("bottleneck_dim", bottleneck_dim)):
            if value < 1:
                raise ValueError(f"DINOHead {name} must be >= 1, got {value}")
        if nlayers == 1:
            layers: list[nn.Module] = [nn.Linear(in_dim, bottleneck_dim)]
        else:
            layers = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(nlayers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():  # DINO: trunc_normal(0.02) weights, zero biases for the MLP
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=init_std)
                nn.init.zeros_(m.bias)
        # Weight normalisation w = g v / ||v|| per output unit; the last layer keeps nn.Linear's default init.
        self.last_layer = parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False), dim=0)
        gain = self.last_layer.parametrizations.weight.original0  # g, shape (K, 1)
        with torch.no_grad():
            gain.fill_(1.0)  # "norm_last_layer": g = 1 so every prototype has unit norm
        gain.requires_grad_(not norm_last_layer)
        self.out_dim = out_dim

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters of the weight-normalised last layer (v, and g when not fixed)."""
        return [p for p in self.last_layer.parameters() if p.requires_grad]

    def forward(self, x: Tensor) -> Tensor:
        x = self.mlp(x)  # (B, bottleneck)
        x = F.normalize(x, dim=-1, p=2)  # z = h / ||h||_2
        return self.last_layer(x)  # (B, K)


@dataclass
class DINOConfig:
    """DINO hyper-parameters (defaults: the ViT-B/16 recipe of the paper and main_dino.py)."""

    encoder: EncoderConfig = field(default_factory=lambda: get_preset("vision", "base"))
    out_dim: int = 65536  # K prototypes (main_dino.py); reduce to 1-4k for small data sets
    hidden_dim: int = 2048  # head MLP width (DINO)
    bottleneck_dim: int = 256  # head bottleneck before the weight-normalised layer (DINO)
    head_layers: int = 3  # MLP layers in the head (DINO: 3)
    norm_last_layer: bool = True  # fix the last layer's gain at 1 (DINO ViT-B recipe; more stable)
    student_temp: float = 0.1  # tau_s (DINO section 3.1)
    teacher_temp_start: float = 0.04  # tau_t at step 0 (DINO: warm-up from 0.04)
    teacher_temp: float = 0.07  # tau_t after the warm-up (DINO: 0.07; above 0.07 is unstable)
    teacher_temp_warmup_steps: int = 37530  # 30 epochs x 1251 steps (ImageNet at batch 1024); CLI: epochs -> steps
    center_momentum: float = 0.9  # m of the centre EMA (DINO)
    momentum_base: float = 0.996  # teacher EMA momentum at step 0, cosine to momentum_final (DINO)
    momentum_final: float = 1.0
    freeze_last_layer_steps: int = 1251  # "freeze the last layer during the first epoch" (1251 steps at batch 1024)
    n_global: int = 2  # global crops (the teacher's views); DINO: 2
    n_local: int = 8  # local crops (main_dino.py default 8); 0 = two global crops only
    global_scale: tuple[float, float] = (0.4, 1.0)  # RandomResizedCrop range of global crops (main_dino.py)
    local_scale: tuple[float, float] = (0.05, 0.4)  # ... of local crops (main_dino.py)
    local_size: int = 96  # local crop side (DINO: 96 for 224 global crops); a multiple of the patch size

    def __post_init__(self) -> None:
        if isinstance(self.encoder, dict):
            self.encoder = EncoderConfig.from_dict(self.encoder)
        self.global_scale, self.local_scale = tuple(self.global_scale), tuple(self.local_scale)
        self.validate()

    def validate(self) -> None:
        def fail(name: str, problem: str, fix: str) -> None:
            raise config_error("DINOConfig", name, problem, fix)

        if self.encoder.modality != "vision":
            fail("encoder", f"DINO needs a vision encoder, got modality={self.encoder.modality!r}",
                 "build it with get_preset('vision', ...)")
        for name in ("out_dim", "hidden_dim", "bottleneck_dim", "head_layers"):
            if getattr(self, name) < 1:
                fail(name, f"must be >= 1, got {getattr(self, name)}", "see the DINO defaults (65536/2048/256/3)")
        for name in ("student_temp", "teacher_temp_start", "teacher_temp"):
            if getattr(self, name) <= 0:
                fail(name, f"must be > 0, got {getattr(self, name)}", "DINO uses 0.1 (student) and 0.04 -> 0.07")
        if self.teacher_temp_warmup_steps < 0 or self.freeze_last_layer_steps < 0:
            fail("teacher_temp_warmup_steps", "step counts must be >= 0", "use 0 to disable")
        if not 0 <= self.center_momentum <= 1:
            fail("center_momentum", f"must lie in [0, 1], got {self.center_momentum}", "DINO uses 0.9")
        if not 0 <= self.momentum_base <= self.momentum_final <= 1:
            fail("momentum_base", f"need 0 <= base <= final <= 1, got {self.momentum_base} -> {self.momentum_final}",
                 "DINO uses 0.996 -> 1 (0.99 or lower for small batches)")
        if self.n_global < 1 or self.n_local < 0 or self.n_global + self.n_local < 2:
            fail("n_global", f"need >= 1 global and >= 2 crops in all, got {self.n_global} + {self.n_local}",
                 "DINO uses 2 global + 8 local crops")
        if self.local_size % self.encoder.patch_size:
            fail("local_size", f"{self.local_size} is not a multiple of the patch size {self.encoder.patch_size}",
                 f"use e.g. {max(1, self.local_size // self.encoder.patch_size) * self.encoder.patch_size}")
        if self.local_size > self.encoder.image_size:
            fail("local_size", f"{self.local_size} exceeds the global crop size {self.encoder.image_size}",
                 "local crops are smaller than global ones (DINO: 96 vs 224)")

    # Reduced-scale heads (docs/design.md section 8): fewer, smaller prototypes for small data sets.
    HEADS = {
        "tiny": dict(out_dim=256, hidden_dim=128, bottleneck_dim=64, local_size=16, n_local=2),  # unit tests
        "mini": dict(out_dim=1024, hidden_dim=512, bottleneck_dim=128, local_size=16, n_local=6),  # CPU runs
        "small": dict(out_dim=4096, hidden_dim=2048, bottleneck_dim=256, local_size=16, n_local=8),  # one GPU
        "base": dict(),  # DINO ViT-B/16 recipe (the dataclass defaults)
    }

    @classmethod
    def preset(cls, modality: str = "vision", name: str = "base", **overrides) -> DINOConfig:
        """The named encoder preset with the matching head; overrides may name DINO or encoder fields."""
        if modality != "vision":
            raise ValueError(f"DINO is a vision method; got modality={modality!r} (use BertMLM for text)")
        if name not in cls.HEADS:
            raise ValueError(f"unknown DINO preset {name!r}; choose one of {tuple(cls.HEADS)}")
        enc_overrides, own_overrides = split_overrides(cls, overrides)
        if name != "base":
            # DINO's ViT has no layer scale, and the vision presets' 1e-4 makes the CLS token practically
            # independent of the image at init: the teacher then gives every image the same output, the
            # centre turns that into the uniform distribution and nothing bootstraps (measured on tiny
            # runs; see "Tuning notes"). "base" keeps the data2vec backbone for equal-footing comparisons.
            enc_overrides.setdefault("layer_scale", None)  # a user override still wins
        encoder = get_preset("vision", name, **enc_overrides)
        values = dict(cls.HEADS[name])
        values.setdefault("local_size", cls.local_size)
        p, size = encoder.patch_size, encoder.image_size
        if values["local_size"] > size or values["local_size"] % p:  # e.g. image_size overridden to 8 or 28 px
            # about DINO's 96/224 of the global side, a multiple of the patch, at least one patch
            values["local_size"] = max(p, round(size * 96 / 224 / p) * p)
        values.update(own_overrides)
        return cls(encoder=encoder, **values)


class DINO(nn.Module):
    """Student (backbone + DINOHead) and EMA teacher; `loss, stats = dino({"crops": [...]})`."""

    def __init__(self, cfg: DINOConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg.encoder)
        self.head = DINOHead(cfg.encoder.dim, cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.head_layers,
                             cfg.norm_last_layer, cfg.encoder.init_std)
        # Teacher: a float32 copy of backbone + head, no gradients, eval mode, every parameter averaged.
        self.teacher = EMATeacher(self._student(), scope="encoder")
        self.loss_fn = DINOLoss(cfg.out_dim, cfg.student_temp, cfg.center_momentum)
        # Optimiser steps taken so far (persisted for resume): drives tau_t and the last-layer freeze.
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._last_layer_frozen = cfg.freeze_last_layer_steps > 0
        for p in self.head.last_layer_parameters():
            p.register_post_accumulate_grad_hook(self._drop_frozen_grad)

    def _student(self) -> nn.ModuleDict:
        """A view (no copy) of the student as {"backbone", "head"}: the teacher's structure."""
        return nn.ModuleDict({"backbone": self.backbone, "head": self.head})

    def _drop_frozen_grad(self, param: Tensor) -> None:
        # DINO's cancel_gradients_last_layer: no gradient -> the optimiser skips the parameter this step.
        if self._last_layer_frozen:
            param.grad = None

    def train(self, mode: bool = True) -> DINO:
        super().train(mode)  # EMATeacher keeps itself in eval mode
        return self

    @staticmethod
    def _logits(backbone: nn.Module, head: nn.Module, crops: list[Tensor]) -> list[Tensor]:
        """CLS features of each crop through one backbone call per run of equal-sized crops (as the
        original does), then the head on all of them at once. Returns one (B, K) tensor per crop."""
        B = crops[0].shape[0]
        features, start = [], 0
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape == crops[start].shape:
                end += 1
            x = torch.cat(crops[start:end])  # ((end - start) * B, C, h, w)
            features.append(backbone(x)[:, 0])  # CLS token of the final output: (n B, D)
            start = end
        logits = head(torch.cat(features))  # (n_crops * B, K)
        return list(logits.split(B))  # n_crops x (B, K)

    def _crops(self, batch) -> list[Tensor]:
        if not isinstance(batch, dict) or "crops" not in batch:
            keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise ValueError(f"DINO needs a multi-crop batch {{'crops': [global1, global2, local1, ...]}}, got "
                             f"{keys}; build it with baselines.MultiCropTransform + baselines.collate_crops")
        crops = list(batch["crops"])
        cfg = self.cfg
        if len(crops) < max(2, cfg.n_global):
            raise ValueError(f"DINO got {len(crops)} crops but needs the {cfg.n_global} global crops first "
                             f"(plus local crops); check MultiCropTransform's n_local")
        B = crops[0].shape[0]
        device = next(self.backbone.parameters()).device
        for v, c in enumerate(crops):
            if c.dim() != 4 or c.shape[0] != B:
                raise ValueError(f"crop {v} must be (B={B}, C, h, w), got {tuple(c.shape)}")
        for v in range(1, cfg.n_global):
            if crops[v].shape != crops[0].shape:
                raise ValueError(f"global crops must share one size, got {tuple(crops[0].shape)} and "
                                 f"{tuple(crops[v].shape)}")
        return [c.to(device, non_blocking=True) for c in crops]

    def teacher_temp_at(self, step: int) -> float:
        cfg = self.cfg
        return teacher_temp_schedule(step, cfg.teacher_temp_warmup_steps, cfg.teacher_temp_start, cfg.teacher_temp)

    def forward(self, batch) -> tuple[Tensor, dict]:
        crops = self._crops(batch)
        cfg = self.cfg
        step = int(self.steps_done.item())
        self._last_layer_frozen = step < cfg.freeze_last_layer_steps
        teacher_temp = self.teacher_temp_at(step)
        student_out = self._logits(self.backbone, self.head, crops)  # every crop
        with torch.no_grad():
            t = self.teacher.module  # {"backbone", "head"}, the EMA copy
            teacher_out = self._teacher_logits(t["backbone"], t["head"], crops[: cfg.n_global])  # global crops only
            probs = torch.cat([self.loss_fn.teacher_probs(o, teacher_temp) for o in teacher_out])  # (n_g B, K)
            teacher_entropy = entropy(probs).mean()  # mean_b H(P_t(b))
            batch_entropy = entropy(probs.mean(dim=0))  # H(mean_b P_t(b))
        loss = self.loss_fn(student_out, teacher_out, teacher_temp)  # the centre is updated inside
        stats = {  # 0-dim tensors (and floats known on the host): the engine moves them in one transfer
            "loss": loss.detach(),
            "teacher_entropy": teacher_entropy,
            "teacher_batch_entropy": batch_entropy,
            "center_norm": self.loss_fn.center.norm(),
            "teacher_temp": teacher_temp,
            "last_layer_frozen": float(self._last_layer_frozen),
        }
        return loss, stats

    def _teacher_logits(self, backbone: nn.Module, head: nn.Module, crops: list[Tensor]) -> list[Tensor]:
        device_type = crops[0].device.type
        with torch.autocast(device_type=device_type, enabled=False):  # the teacher runs in float32
            return self._logits(backbone, head, [c.float() for c in crops])

    @torch.no_grad()
    def step_hook(self, step: int, total_steps: int) -> dict:
        """After optimiser step `step`: EMA update of the teacher with the cosine momentum, advance the step."""
        cfg = self.cfg
        momentum = cosine_momentum(step, total_steps, cfg.momentum_base, cfg.momentum_final)
        self.teacher.update(self._student(), momentum)  # theta_t <- m theta_t + (1 - m) theta_s
        self.steps_done.fill_(step + 1)
        self._last_layer_frozen = step + 1 < cfg.freeze_last_layer_steps
        return {"momentum": momentum}

    def multicrop_transform(self, mean=None, std=None, flip: bool = True) -> MultiCropTransform:
        """The augmentation matching this config (global crops at the encoder's image size)."""
        cfg = self.cfg
        if (mean is None) != (std is None):
            raise ValueError("pass both mean and std (the data set's channel statistics) or neither (ImageNet's)")
        kwargs = {} if mean is None else dict(mean=mean, std=std)
        return MultiCropTransform(cfg.encoder.image_size, cfg.local_size, cfg.n_local, cfg.global_scale,
                                  cfg.local_scale, flip=flip, **kwargs)
