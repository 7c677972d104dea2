"""data2vec 2.0 for images and text: visible-only student, multi-mask, conv decoders, one teacher pass.

data2vec 2.0 (Baevski et al. 2022, arXiv 2212.07525), section 3 "Method"; docs/design.md section 5 holds the
released recipe (fairseq `examples/data2vec/models/data2vec2.py`, `models/modalities/*`, configs
`config/v2/base_{images,text}_only_task.yaml`). Letters: B batch, M masks per sample, N tokens (patches),
K visible tokens per row, D width. One training step, in the named steps below:

1. `make_masks`: M independent masks per sample, bool (B * M, N), True = masked, clones of a sample adjacent
   (`repeat_interleave` order). Images: inverse block masks (`masking.inverse_block_mask`, R = 0.8);
   text: exact-ratio random masks (`masking.random_mask`, R = 0.48).
2. `forward_teacher`: the EMA teacher encodes the clean input once per sample (not once per mask). Targets:
   y = LN( 1/K sum_{l = top K} IN(f^l) ) with f^l the FFN output of block l (before the residual and LN2),
   IN the instance norm over tokens (per sample and channel) and, for images, a final layer norm; the CLS
   token and the "prenet" blocks (the first `prenet_depth`, ViT-B: 2 of 12) never give targets.
   Images also regress a CLS target: the mean of y over the patches.
3. `forward_student`: the student runs on the visible tokens only (`backbone.forward_visible`: positions
   added to every token, the masked ones dropped, then CLS prepended and one LayerNorm, for images);
   the decoder input is the student output without CLS, with the masked slots filled with noise
   N(0, 0.01^2) and the original order restored; no positions are added. Images decode with
   `ConvDecoder2d` (grouped 3 x 3 convolutions on the patch grid, residual), text with `ConvDecoder1d`
   (width-9 convolutions along the sequence, no residual, MLP projection).
4. `forward_loss`: L = 1/|masked| sum_{masked} s * ||p - y||^2 + w_cls * sum_{rows} s * ||c - mean(y)||^2,
   with s = 1/sqrt(D) (images) or 1 (text), w_cls = 0.01 for images (text: no CLS term); the CLS term is
   summed over the B * M rows, not averaged (the released code multiplies it by |masked| before the
   criterion divides everything by |masked|).
5. `step_hook` after the optimiser step: EMA update Delta <- tau Delta + (1 - tau) theta of the encoder
   (images: everything but the decoder; text: the blocks only, embeddings shared), tau ramped linearly
   from tau_start to tau_end.

What differs by modality (batch keys, masks, student and teacher inputs, decoder, recipe rows) is the
modality plug-in's (`modalities/`); the EMA teacher, tau schedule and collapse guard are `teacher.py`'s.

Padding (text): padded tokens are never masked and never visible; every row keeps max(1, int(n_b (1 - R)))
of its n_b real tokens (`masking.random_mask`), the student pads rows that keep fewer than the longest
(filler slots masked out of attention), the decoder sees zeros at padded slots and re-zeroes them after
every block (so a padded row decodes exactly as the same row without padding), and pads never enter the
loss or a statistic. Without padding every row keeps the same count, as in the released code.

Differences from the released code:
- masks come from torch's global RNG (or a `generator`), not from seeds hashed from sample ids;
- the visible tokens keep their original order in the student (fairseq: `argsort` order; attention is
  permutation-equivariant, so only the reduction order differs);
- text teacher input: as released, with `ema_scope="blocks"` the teacher's blocks run on the student's own
  embedding output (with its dropout in training); with `ema_scope="encoder"` on the EMA embedding;
- fairseq stops at the first low target/prediction variance after 5000 updates; we use the project's
  `CollapseGuard` (std, not variance; `collapse_patience` steps in a row).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from . import modalities
from .backbone import build_backbone
from .config import EncoderConfig, check_choices, config_error, from_dict_checked, get_preset, split_overrides
from .diagnostics import explained_variance, spread
from .ema import EMA_SCOPES
from .targets import TARGET_NORMS, build_targets
from .teacher import TauSchedule, TeacherBookkeeping

__all__ = ["Data2Vec2Config", "Data2Vec2", "v2_encoder"]

PRESET_NAMES = ("tiny", "mini", "small", "base")


def v2_encoder(modality: str, name: str, **overrides) -> EncoderConfig:
    """The data2vec 2.0 encoder of a preset size: the project's preset with the released v2 architecture."""
    return get_preset(modality, name, **{**modalities.get(modality).v2_encoder, **overrides})


# ---------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------


@dataclass
class Data2Vec2Config(TauSchedule):
    """data2vec 2.0 method configuration. Defaults are the released image recipe (ViT-B/16,
    docs/design.md section 5); `Data2Vec2Config.preset(modality, name)` gives text and the reduced sizes."""

    encoder: EncoderConfig = field(default_factory=lambda: v2_encoder("vision", "base"))
    # --- multi-mask --------------------------------------------------------------------------------
    num_masks: int = 16  # M masked clones per sample (images 16, text 8); more = more signal per teacher pass
    mask_ratio: float = 0.8  # R, fraction of tokens masked (images 0.8, text 0.48)
    mask_block: int = 3  # images: side of the kept blocks (3 on 14 x 14; 2 on 8 x 8 grids)
    mask_adjust: float = 0.07  # images: extra keep fraction for the number of block centres (blocks overlap)
    # --- targets -----------------------------------------------------------------------------------
    prenet_depth: int = 2  # first blocks that never give targets (ViT-B: 2 of 12; text 0)
    top_k: int = 10  # targets average the top K blocks (of depth - prenet_depth); released: all of them
    layer_norm: str = "instance"  # per-layer norm before averaging: "instance" (released), "layer", "none"
    final_norm: str = "layer"  # after averaging: "layer" (images), "none" (text)
    # --- loss --------------------------------------------------------------------------------------
    loss_scale: float | None = None  # multiplies the squared error summed over D; None = 1/sqrt(D) (images),
    #                                  text uses 1 (with sum over D, the effective lr grows with D: keep lr low)
    cls_loss: float = 0.01  # images: weight of the CLS regression onto the mean target (0 = off; text: 0)
    # --- decoder (not part of the teacher, dropped for fine-tuning) -------------------------------------
    decoder_dim: int = 0  # decoder width; 0 = the encoder width (released: 768 for base)
    decoder_layers: int = 6  # conv blocks (images 6, text 5)
    decoder_kernel: int = 3  # kernel size, odd (images 3 x 3, text 9)
    decoder_groups: int = 16  # conv groups (images 16, text 1); must divide both widths
    decoder_residual: bool = True  # x + block(x) where widths match (images); text: False
    decoder_projection_ratio: float = 0.0  # 0 = one Linear to D (images); r > 0 = Linear(d, r d)-GELU-Linear (text 2)
    decoder_dropout: float = 0.0  # dropout on the decoder input (images 0, text 0.1)
    mask_noise_std: float = 0.01  # std of the noise that fills the masked slots of the decoder input
    # --- EMA teacher -------------------------------------------------------------------------------
    tau_start: float = 0.9998  # released images: 0.9998 (text 0.9999) ...
    tau_end: float = 0.99999  # ... -> 0.99999
    tau_ramp_steps: float = 100_000  # updates of the linear ramp; 0 = constant tau_end; in (0, 1) = that
    #                                  fraction of the run (small batches / short runs: use a fraction)
    ema_scope: str = "encoder"  # "encoder" = all averaged (images), "blocks" = embeddings shared (text)
    # --- collapse guard (same names as data2vec v1) -----------------------------------------------------
    collapse_min_target_std: float = 0.1  # fairseq v1 min_target_var = 0.1 (released v2 images: off); 0 = off
    collapse_min_pred_std: float = 0.01  # fairseq min_pred_var = 0.01; 0 = off
    collapse_warmup_steps: int = 5000  # fairseq: checked after 5000 updates
    collapse_patience: int = 10  # consecutive training steps below a threshold before stopping

    def __post_init__(self) -> None:
        if isinstance(self.encoder, dict):
            self.encoder = EncoderConfig.from_dict(self.encoder)
        self.validate()

    @property
    def modality(self) -> str:
        return self.encoder.modality

    def validate(self) -> None:
        def fail(name: str, problem: str, fix: str) -> None:
            raise config_error("Data2Vec2Config", name, problem, fix)

        check_choices(self, dict(layer_norm=TARGET_NORMS, final_norm=TARGET_NORMS, ema_scope=EMA_SCOPES))
        enc = self.encoder
        if self.num_masks < 1:
            fail("num_masks", f"must be >= 1, got {self.num_masks}", "use 16 (images) or 8 (text)")
        if not 0.0 < self.mask_ratio < 1.0:
            fail("mask_ratio", f"must lie in (0, 1), got {self.mask_ratio}", "use 0.8 (images) or 0.48 (text)")
        if not 0 <= self.prenet_depth < enc.depth:
            fail("prenet_depth", f"{self.prenet_depth} is outside [0, {enc.depth - 1}] (encoder depth {enc.depth})",
                 "use 2 of 12 blocks (images), 0 (text)")
        shared = enc.depth - self.prenet_depth
        if not 1 <= self.top_k <= shared:
            fail("top_k", f"{self.top_k} is outside [1, {shared}] (the blocks after the prenet)",
                 f"use {shared} (all of them, as released) or the top 3/4 to 5/6, at least 2")
        if self.loss_scale is not None and self.loss_scale <= 0:
            fail("loss_scale", f"must be > 0 or None, got {self.loss_scale}", "use None (1/sqrt(D)) or 1.0")
        if self.cls_loss < 0:
            fail("cls_loss", f"must be >= 0, got {self.cls_loss}", "use 0.01 (images) or 0")
        width = self.decoder_width
        if self.decoder_dim < 0:
            fail("decoder_dim", f"must be >= 0, got {self.decoder_dim}", "use 0 (= encoder width) or e.g. 768")
        if self.decoder_layers < 1:
            fail("decoder_layers", f"must be >= 1, got {self.decoder_layers}", "use 6 (images) or 5 (text)")
        if self.decoder_kernel < 1 or self.decoder_kernel % 2 == 0:
            fail("decoder_kernel", f"must be a positive odd number, got {self.decoder_kernel}",
                 "use 3 (images) or 9 (text)")
        if self.decoder_groups < 1 or enc.dim % self.decoder_groups or width % self.decoder_groups:
            fail("decoder_groups", f"{self.decoder_groups} does not divide the widths {enc.dim} and {width}",
                 "use a divisor of both (16 for images at 64-wide multiples, 1 for text)")
        if self.decoder_projection_ratio < 0:
            fail("decoder_projection_ratio", f"must be >= 0, got {self.decoder_projection_ratio}",
                 "use 0 (one Linear, images) or 2 (text)")
        if not 0.0 <= self.decoder_dropout < 1.0:
            fail("decoder_dropout", f"must lie in [0, 1), got {self.decoder_dropout}", "use 0 (images) or 0.1")
        if self.mask_noise_std < 0:
            fail("mask_noise_std", f"must be >= 0, got {self.mask_noise_std}", "use 0.01")
        self.check_teacher(fail, tau_fix="released: 0.9998 -> 0.99999")
        modalities.get(self.modality).check_v2(self, fail)

    @property
    def decoder_width(self) -> int:
        return self.decoder_dim if self.decoder_dim > 0 else self.encoder.dim

    # --- presets and (de)serialisation ---------------------------------------------------------------
    @classmethod
    def preset(cls, modality: str, name: str = "base", **overrides) -> Data2Vec2Config:
        """`base`: the released recipe (docs/design.md section 5); `tiny` / `mini` / `small`: the reduced recipes
        (docs/design.md section 8, the modality's `v2_reduced`). Overrides may name method fields or encoder fields."""
        plugin = modalities.get(modality)
        if name not in PRESET_NAMES:
            raise ValueError(f"unknown data2vec 2.0 preset {name!r}; choose one of {PRESET_NAMES}")
        encoder_overrides, own_overrides = split_overrides(cls, overrides)
        values = {**plugin.v2_recipe, **plugin.v2_reduced.get(name, {}), **own_overrides}
        return cls(encoder=v2_encoder(modality, name, **encoder_overrides), **values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Data2Vec2Config:
        return from_dict_checked(cls, values)


# ---------------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------------


def _normal(shape, std: float, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, std^2) noise of `shape` with like's dtype and device, from `generator` or the global RNG."""
    if generator is None:
        noise = torch.randn(shape, device=like.device)
    else:
        noise = torch.randn(shape, generator=generator, device=generator.device).to(like.device)
    return (noise * std).to(like.dtype)


class Data2Vec2(TeacherBookkeeping):
    """data2vec 2.0: `loss, stats = model(batch)`; call `model.step_hook(step, total_steps)` after each
    optimiser step. `backbone` is the student encoder (what fine-tuning keeps; no decoder), `teacher` its
    EMA copy, `decoder` the conv decoder (pretraining only)."""

    def __init__(self, cfg: Data2Vec2Config):
        super().__init__()
        self.cfg = cfg
        self.modality = modalities.get(cfg.modality)  # reads batches, masks, feeds student and teacher, decoder
        self.backbone = build_backbone(cfg.encoder)
        self.init_teacher(cfg, method="data2vec2")  # teacher = EMA copy of the backbone, tau, collapse guard
        self.decoder = self.modality.build_decoder(cfg)

    def read_batch(self, batch: dict) -> dict:
        """The batch with its required keys checked; text batches get a padding_mask if they lack one."""
        return self.modality.read_batch(batch, self.cfg.encoder.pad_id, "data2vec2")

    # --- 1. masks --------------------------------------------------------------------------------------
    def make_masks(self, batch: dict, generator: torch.Generator | None = None) -> Tensor:
        """bool (B * M, N), True = masked; row b * M + m is the m-th of the M independent masks of sample b."""
        return self.modality.v2_masks(self, self.read_batch(batch), generator)

    # --- 2. teacher ------------------------------------------------------------------------------------
    def forward_teacher(self, batch: dict) -> tuple[Tensor, Tensor | None]:
        """(targets (B, N, D), cls_target (B, D) or None) from one teacher pass over the clean input.

        Eq.: y = final_norm(1/K sum_{l in top K} layer_norm(f^l)), f^l = FFN output of block l, prenet blocks
        and CLS excluded; cls_target = mean of y over the patches (images with cls_loss > 0)."""
        cfg = self.cfg
        with torch.no_grad():
            layers, padding_mask = self.modality.v2_teacher_layers(self, self.read_batch(batch))  # depth x (B, N, D)
            layers = layers[cfg.prenet_depth:]  # the prenet blocks never give targets
            targets = build_targets(layers, cfg.top_k, layer_norm=cfg.layer_norm, final_norm=cfg.final_norm,
                                    padding_mask=padding_mask)  # (B, N, D), zero at pads
            cls_target = targets.mean(dim=1) if cfg.cls_loss > 0 else None  # (B, D)
        return targets, cls_target

    # --- 3. student + decoder ----------------------------------------------------------------------------
    def decoder_input(self, tokens: Tensor, visible: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Student tokens (R, K, D) (CLS removed, row r's visible tokens first, in order) -> (R, N, D): dropout,
        then each visible token back at its position and N(0, mask_noise_std^2) noise in every other slot."""
        tokens = F.dropout(tokens, self.cfg.decoder_dropout, training=self.training)
        R, N = visible.shape
        count = visible.sum(dim=1)  # (R,) visible per row
        real = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < count[:, None]  # (R, K) not filler
        full = _normal((R, N, tokens.shape[-1]), self.cfg.mask_noise_std, tokens, generator)  # (R, N, D)
        return full.masked_scatter(visible[..., None], tokens[real])  # row-major: positions ascending

    def forward_student(self, batch: dict, mask: Tensor,
                        generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        """(decoded (B * M, N, D), cls_pred (B * M, D) or None): the student on the visible tokens only, then
        the decoder over every position. mask: bool (B * M, N), True = masked (from `make_masks`)."""
        if mask.dtype != torch.bool or mask.dim() != 2:
            raise ValueError(f"mask must be bool (B * M, N) with True = masked, got {mask.dtype} {tuple(mask.shape)}")
        return self.modality.v2_student(self, self.read_batch(batch), mask, generator)

    # --- 4. loss ------------------------------------------------------------------------------------------
    def loss_scale(self) -> float:
        return self.cfg.loss_scale if self.cfg.loss_scale is not None else 1.0 / math.sqrt(self.cfg.encoder.dim)

    def forward_loss(self, decoded: Tensor, cls_pred: Tensor | None, targets: Tensor, cls_target: Tensor | None,
                     mask: Tensor) -> Tensor:
        """L = 1/|masked| sum_masked s ||p - y||^2 + cls_loss * sum_rows s ||c - cls_target||^2 (s: loss scale).

        decoded (B * M, N, D), targets (B, N, D) (repeated M times here), mask bool (B * M, N) True = masked."""
        B, N, D = targets.shape
        M = decoded.shape[0] // B
        s = self.loss_scale()
        y = targets[:, None].expand(B, M, N, D)[mask.view(B, M, N)]  # (|masked|, D), no (B * M, N, D) copy
        p = decoded[mask].float()  # (|masked|, D)
        count = mask.sum().clamp(min=1)  # stays on the device
        loss = ((p - y) ** 2).sum() * s / count
        if cls_pred is not None and cls_target is not None and self.cfg.cls_loss > 0:
            c = cls_target.repeat_interleave(M, dim=0)  # (B * M, D)
            loss = loss + self.cfg.cls_loss * ((cls_pred.float() - c) ** 2).sum() * s  # summed over rows
        return loss

    # --- the training step --------------------------------------------------------------------------------
    def forward(self, batch: dict, generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
        batch = self.read_batch(batch)
        mask = self.make_masks(batch, generator)  # (B * M, N)
        targets, cls_target = self.forward_teacher(batch)  # (B, N, D), once per sample
        decoded, cls_pred = self.forward_student(batch, mask, generator)  # (B * M, N, D)
        loss = self.forward_loss(decoded, cls_pred, targets, cls_target, mask)
        with torch.no_grad():
            B, N, D = targets.shape
            M = mask.shape[0] // B
            masked_targets = targets[:, None].expand(B, M, N, D)[mask.view(B, M, N)]  # (|masked|, D)
            eligible = self.modality.eligible(self, batch, mask)  # positions that could have been masked
            masked_pred = decoded[mask]  # (|masked|, D), gathered once for both statistics
            stats = {
                "loss": loss.detach(),
                "target_std": spread(masked_targets),
                "pred_std": spread(masked_pred),
                "explained_variance": explained_variance(masked_pred, masked_targets),  # the loss, scale-free
                "tau": torch.tensor(float(self.tau), device=loss.device),
                "masked_fraction": mask.sum() / eligible.clamp(min=1),
            }
        self.check_collapse(stats)
        return loss, stats
