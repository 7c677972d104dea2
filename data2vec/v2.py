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
from einops import rearrange
from torch import Tensor, nn

from .backbone import build_backbone
from .config import EncoderConfig, check_choices, config_error, from_dict_checked, get_preset, split_overrides
from .diagnostics import CollapseGuard, explained_variance, spread
from .ema import EMA_SCOPES, EMATeacher, linear_tau
from .masking import inverse_block_mask, random_mask
from .targets import TARGET_NORMS, build_targets

__all__ = ["Data2Vec2Config", "Data2Vec2", "ConvDecoder2d", "ConvDecoder1d", "V2_VISION_ENCODER"]

# ---------------------------------------------------------------------------------------------------
# Recipes (docs/design.md section 5 for base, section 8 for the reduced sizes)
# ---------------------------------------------------------------------------------------------------

# The released image encoder, applied on top of config.VISION_PRESETS[name] (which gives the sizes).
V2_VISION_ENCODER = dict(
    norm_first=False,  # released: post-LN blocks (layer_norm_first = False; its pre-LN branch is broken)
    layer_scale=None,  # released: no layer scale
    drop_path=0.0,  # released: no drop path in pretraining
    final_norm=False,  # released: post-LN blocks end in a norm, no final norm
    position="sincos",  # released: fixed 2-D sin-cos positions on the patches, none on CLS
    embed_norm=True,  # released: LayerNorm after the gather and the CLS prepend (before the prenet blocks)
    cls_init_std=1.0,  # released: CLS ~ N(0, 1) (init_extra_token_zero = False)
    init="bert",  # released: init_bert_params, normal(0.02) on linears
    qkv_bias=True, k_bias=True,  # released: qkv_bias = True
    norm_eps=1e-6,  # released: norm_eps = 1e-6
    dropout=0.0, attn_dropout=0.0,  # released: encoder_dropout = attention_dropout = 0
    use_mask_token=False,  # masked patches are dropped, not replaced
)
# The text encoder is config.TEXT_PRESETS[name] unchanged: post-LN RoBERTa-style, learned positions,
# embedding LN, dropout 0.1, LN eps 1e-5 (released base_text_only_task: norm_eps 1e-5).

RECIPES: dict[str, dict] = {
    "vision": dict(  # base_images_only_task.yaml (ViT-B/16, 224 px)
        num_masks=16,  # clone_batch = 16
        mask_ratio=0.8,  # mask_prob = 0.8
        mask_block=3,  # mask_length = 3
        mask_adjust=0.07,  # mask_prob_adjust = 0.07
        prenet_depth=2,  # prenet_depth = 2 (+ depth 10 shared blocks = 12)
        top_k=10,  # average_top_k_layers = 10: all shared blocks
        layer_norm="instance",  # instance_norm_target_layer = True
        final_norm="layer",  # layer_norm_targets = True
        loss_scale=None,  # loss_scale unset -> 1/sqrt(D)
        cls_loss=0.01,  # cls_loss = 0.01
        decoder_dim=0,  # decoder_dim = 768 = D
        decoder_layers=6,  # decoder_layers = 6
        decoder_kernel=3,  # decoder_kernel = 3
        decoder_groups=16,  # decoder_groups = 16
        decoder_residual=True,  # decoder_residual default True
        decoder_projection_ratio=0.0,  # one Linear(768, D)
        decoder_dropout=0.0,  # decoder input_dropout = 0
        mask_noise_std=0.01,  # mask_noise_std = 0.01
        tau_start=0.9998,  # ema_decay = 0.9998
        tau_end=0.99999,  # ema_end_decay = 0.99999
        tau_ramp_steps=100_000,  # ema_anneal_end_step = 100k (of 375k updates)
        ema_scope="encoder",  # ema_encoder_only = False: patch embedding, CLS, input LN and blocks averaged
    ),
    "text": dict(  # base_text_only_task.yaml (12 x 768)
        num_masks=8,  # clone_batch = 8
        mask_ratio=0.48,  # mask_prob = 0.48, mask_length = 1 (random masking)
        mask_block=1,  # unused for text
        mask_adjust=0.0,  # unused for text
        prenet_depth=0,  # prenet_depth = 0
        top_k=12,  # average_top_k_layers = 12
        layer_norm="instance",  # instance_norm_target_layer = True
        final_norm="none",  # layer_norm_targets = instance_norm_targets = False
        loss_scale=1.0,  # loss_scale = 1
        cls_loss=0.0,  # no CLS token, no CLS loss
        decoder_dim=0,  # decoder_dim = 768 = D
        decoder_layers=5,  # decoder_layers = 5
        decoder_kernel=9,  # decoder_kernel = 9
        decoder_groups=1,  # decoder_groups = 1
        decoder_residual=False,  # decoder_residual = False
        decoder_projection_ratio=2.0,  # projection_layers = 2, projection_ratio = 2: 768 -> 1536 -> D
        decoder_dropout=0.1,  # decoder input_dropout = 0.1
        mask_noise_std=0.01,  # mask_noise_std = 0.01
        tau_start=0.9999,  # ema_decay = 0.9999
        tau_end=0.99999,  # ema_end_decay = 0.99999
        tau_ramp_steps=100_000,  # ema_anneal_end_step = 100k (of 1M updates)
        ema_scope="blocks",  # ema_encoder_only = True: embeddings shared with the student
    ),
}

_SHORT_RUN = dict(  # docs/design.md section 8, every reduced preset
    tau_start=0.99,  # time constant 100 steps at the start ...
    tau_end=0.999,  # ... 1000 at the end: shorter than a CPU run (0.9998 would be 5000)
    tau_ramp_steps=0.3,  # ramp over the first 30% of the run (released text: 100k of 1M = 10%, images 27%)
    collapse_warmup_steps=200,  # short runs: watch from update 200
)

REDUCED: dict[tuple[str, str], dict] = {
    ("vision", "tiny"): dict(_SHORT_RUN,  # 2 x 64, 4 x 4 grid: unit tests
                             num_masks=2,  # few clones: a test step in milliseconds
                             mask_block=2,  # 3 x 3 would be 9 of 16 cells; 2 x 2 fits the grid
                             prenet_depth=0, top_k=2,  # two blocks: both are targets
                             decoder_layers=2),  # a small decoder for a small model
    ("vision", "mini"): dict(_SHORT_RUN,  # 4 x 256, 8 x 8 grid: CPU in minutes
                             mask_block=2,  # block area scaled with the grid: 9/196 of 64 cells ~ 3 -> 2 x 2
                             prenet_depth=1, top_k=3),  # 2/12 of the depth rounded; the other 3 (3/4) targets
    ("vision", "small"): dict(_SHORT_RUN,  # 6 x 384, 8 x 8 grid: one GPU
                              mask_block=2,  # as mini (same grid)
                              prenet_depth=1, top_k=5),  # 1 prenet block, the other 5 (5/6) are targets
    ("text", "tiny"): dict(_SHORT_RUN, num_masks=2, top_k=2, decoder_layers=2),  # 2 x 64: unit tests
    ("text", "mini"): dict(_SHORT_RUN, top_k=3,  # 4 x 256: top 3 of 4 (5/6 rounded, docs/design.md section 8)
                           # 2 masks and a 2-block decoder (released: 8 and 5), the text study's recipe: at batch
                           # 64 x 128 tokens on one CPU core an update cost ~45 s with the released pair (under 30
                           # updates in 20 minutes), 6.2 s with this one (benchmarks/studies/README.md, text)
                           num_masks=2, decoder_layers=2),
    ("text", "small"): dict(_SHORT_RUN, top_k=3),  # 4 x 512: as mini
}

PRESET_NAMES = ("tiny", "mini", "small", "base")


def v2_encoder(modality: str, name: str, **overrides) -> EncoderConfig:
    """The data2vec 2.0 encoder of a preset size: the project's preset with the released v2 architecture."""
    base = V2_VISION_ENCODER if modality == "vision" else {}
    return get_preset(modality, name, **{**base, **overrides})


# ---------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------


@dataclass
class Data2Vec2Config:
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
        if self.cls_loss > 0 and self.modality == "text":
            fail("cls_loss", "text encoders have no CLS token to regress", "set cls_loss=0 for text")
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
        for name in ("tau_start", "tau_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                fail(name, f"must lie in [0, 1], got {getattr(self, name)}", "released: 0.9998 -> 0.99999")
        if self.tau_ramp_steps < 0:
            fail("tau_ramp_steps", f"must be >= 0, got {self.tau_ramp_steps}",
                 "use 0 (constant), a step count, or a fraction in (0, 1) of the run")
        for name in ("collapse_min_target_std", "collapse_min_pred_std", "collapse_warmup_steps"):
            if getattr(self, name) < 0:
                fail(name, f"must be >= 0, got {getattr(self, name)}", "use 0 to disable")
        if self.collapse_patience < 1:
            fail("collapse_patience", f"must be >= 1, got {self.collapse_patience}", "use 10")
        if self.modality == "vision":
            if enc.position not in ("sincos", "learned"):
                fail("encoder", f"position={enc.position!r} cannot run the visible-only student",
                     "use position='sincos' (released) or 'learned'")
            if enc.use_mask_token:
                fail("encoder", "use_mask_token=True: data2vec 2.0 drops masked patches instead of replacing them",
                     "set use_mask_token=False")
            grid = enc.grid_size
            if not 1 <= self.mask_block <= grid:
                fail("mask_block", f"a {self.mask_block} x {self.mask_block} block does not fit the {grid} x {grid} "
                     f"patch grid", f"use 1..{grid} (3 on 14 x 14, 2 on 8 x 8)")
            if self.mask_adjust < 0:
                fail("mask_adjust", f"must be >= 0, got {self.mask_adjust}", "use 0.07")
            if int(enc.num_patches * (1 - self.mask_ratio)) < 1:
                fail("mask_ratio", f"{self.mask_ratio} keeps no patch of {enc.num_patches}", "lower mask_ratio")

    @property
    def decoder_width(self) -> int:
        return self.decoder_dim if self.decoder_dim > 0 else self.encoder.dim

    def ramp_steps(self, total_steps: int) -> int:
        """The tau ramp length in steps: a fraction in (0, 1) is taken of the run's total_steps."""
        if 0.0 < self.tau_ramp_steps < 1.0:
            return max(1, int(round(self.tau_ramp_steps * total_steps)))
        return int(self.tau_ramp_steps)

    def tau_at(self, step: int, total_steps: int) -> float:
        return linear_tau(step, self.tau_start, self.tau_end, self.ramp_steps(total_steps))

    # --- presets and (de)serialisation ---------------------------------------------------------------
    @classmethod
    def preset(cls, modality: str, name: str = "base", **overrides) -> Data2Vec2Config:
        """`base`: the released recipe (docs/design.md section 5); `tiny` / `mini` / `small`: the reduced recipes
        (docs/design.md section 8, table `REDUCED`). Overrides may name method fields or encoder fields."""
        if modality not in RECIPES:
            raise ValueError(f"unknown modality {modality!r}; use one of {tuple(RECIPES)}")
        if name not in PRESET_NAMES:
            raise ValueError(f"unknown data2vec 2.0 preset {name!r}; choose one of {PRESET_NAMES}")
        encoder_overrides, own_overrides = split_overrides(cls, overrides)
        values = {**RECIPES[modality], **REDUCED.get((modality, name), {}), **own_overrides}
        return cls(encoder=v2_encoder(modality, name, **encoder_overrides), **values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Data2Vec2Config:
        return from_dict_checked(cls, values)


# ---------------------------------------------------------------------------------------------------
# Decoders
# ---------------------------------------------------------------------------------------------------


def channel_layer_norm(x: Tensor) -> Tensor:
    """LayerNorm over the channel axis 1 of (B, C, ...), no affine (fairseq LayerNorm, eps 1e-5)."""
    x = x.movedim(1, -1)  # (B, ..., C)
    return F.layer_norm(x, x.shape[-1:]).movedim(-1, 1)  # (B, C, ...)


def projection(width: int, dim: int, ratio: float) -> nn.Module:
    """Linear(width, dim) (ratio 0), or Linear(width, ratio * width) -> GELU -> Linear(ratio * width, dim)."""
    if ratio <= 0:
        return nn.Linear(width, dim)
    hidden = int(width * ratio)
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, dim))


class ConvDecoder2d(nn.Module):
    """Image decoder (released `Decoder2d`): per block h <- h + GELU(LN_c(Conv2d_kxk,groups(h))) on the patch
    grid (the residual only where in/out widths match), then Linear(width, D) per patch. No positions."""

    def __init__(self, dim: int, width: int | None = None, layers: int = 6, kernel: int = 3, groups: int = 16,
                 residual: bool = True):
        super().__init__()
        width = dim if width is None else width
        self.residual = residual
        self.convs = nn.ModuleList(
            nn.Conv2d(dim if i == 0 else width, width, kernel, padding=kernel // 2, groups=groups)
            for i in range(layers)
        )
        self.proj = nn.Linear(width, dim)

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """x: (B, N, D) with N = rows * cols in row-major order -> (B, N, D)."""
        rows, cols = grid
        h = rearrange(x, "b (r c) d -> b d r c", r=rows, c=cols)
        for conv in self.convs:
            y = F.gelu(channel_layer_norm(conv(h)))  # (B, width, rows, cols)
            h = h + y if self.residual and y.shape[1] == h.shape[1] else y
        return self.proj(rearrange(h, "b d r c -> b (r c) d"))


class ConvDecoder1d(nn.Module):
    """Text decoder (released `Decoder1d`): per block h <- GELU(LN_c(Conv1d_k(h))) along the sequence (text:
    no residual), then an MLP projection to D. Padded slots are zero at the input and after every block,
    so padding never reaches a real token (as if the row were unpadded). No positions."""

    def __init__(self, dim: int, width: int | None = None, layers: int = 5, kernel: int = 9, groups: int = 1,
                 residual: bool = False, projection_ratio: float = 2.0):
        super().__init__()
        width = dim if width is None else width
        self.residual = residual
        self.convs = nn.ModuleList(
            nn.Conv1d(dim if i == 0 else width, width, kernel, padding=kernel // 2, groups=groups)
            for i in range(layers)
        )
        self.proj = projection(width, dim, projection_ratio)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """x: (B, T, D); padding_mask: bool (B, T), True = pad. Returns (B, T, D)."""
        h = rearrange(x, "b t d -> b d t")
        keep = None if padding_mask is None else (~padding_mask)[:, None, :].to(h.dtype)  # (B, 1, T)
        if keep is not None:
            h = h * keep
        for conv in self.convs:
            y = F.gelu(channel_layer_norm(conv(h)))  # (B, width, T)
            h = h + y if self.residual and y.shape[1] == h.shape[1] else y
            if keep is not None:
                h = h * keep
        return self.proj(rearrange(h, "b d t -> b t d"))


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


def _advice() -> str:
    return ("the teacher now gives (nearly) the same target for every token. Try: a lower learning rate or a longer "
            "warm-up; a slower teacher (tau_start/tau_end closer to 1, or a longer tau ramp); more top_k layers; "
            "a lower mask_ratio. Set collapse_min_target_std=0 and collapse_min_pred_std=0 to disable this check.")


class Data2Vec2(nn.Module):
    """data2vec 2.0: `loss, stats = model(batch)`; call `model.step_hook(step, total_steps)` after each
    optimiser step. `backbone` is the student encoder (what fine-tuning keeps; no decoder), `teacher` its
    EMA copy, `decoder` the conv decoder (pretraining only)."""

    def __init__(self, cfg: Data2Vec2Config):
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg.encoder)
        self.teacher = EMATeacher(self.backbone, scope=cfg.ema_scope)
        dim = cfg.encoder.dim
        if cfg.modality == "vision":
            self.decoder = ConvDecoder2d(dim, cfg.decoder_width, cfg.decoder_layers, cfg.decoder_kernel,
                                         cfg.decoder_groups, cfg.decoder_residual)
        else:
            self.decoder = ConvDecoder1d(dim, cfg.decoder_width, cfg.decoder_layers, cfg.decoder_kernel,
                                         cfg.decoder_groups, cfg.decoder_residual, cfg.decoder_projection_ratio)
        self.tau = cfg.tau_start  # the momentum of the last EMA step (for logging)
        self.num_updates = 0  # EMA updates so far (set by step_hook)
        self.guard = CollapseGuard(
            {"target_std": cfg.collapse_min_target_std, "pred_std": cfg.collapse_min_pred_std},
            cfg.collapse_warmup_steps, cfg.collapse_patience, method="data2vec2", advice=_advice())

    # --- inputs ----------------------------------------------------------------------------------------
    def _text(self, batch: dict) -> tuple[Tensor, Tensor]:
        if "input_ids" not in batch:
            raise ValueError("a text data2vec2 batch needs 'input_ids' (B, T) and 'padding_mask' (B, T, True = pad)")
        input_ids = batch["input_ids"]
        padding_mask = batch.get("padding_mask")
        if padding_mask is None:
            padding_mask = input_ids == self.cfg.encoder.pad_id
        return input_ids, padding_mask

    def _images(self, batch: dict) -> Tensor:
        if "images" not in batch:
            raise ValueError("a vision data2vec2 batch needs 'images' (B, C, H, W)")
        return batch["images"]

    # --- 1. masks --------------------------------------------------------------------------------------
    def make_masks(self, batch: dict, generator: torch.Generator | None = None) -> Tensor:
        """bool (B * M, N), True = masked; row b * M + m is the m-th of the M independent masks of sample b."""
        cfg, M = self.cfg, self.cfg.num_masks
        if cfg.modality == "vision":
            images = self._images(batch)
            rows, cols = self.backbone.embed.grid_of(images)
            return inverse_block_mask(images.shape[0] * M, rows, cols, cfg.mask_ratio, block=cfg.mask_block,
                                      adjust=cfg.mask_adjust, generator=generator, device=images.device)
        input_ids, padding_mask = self._text(batch)
        if bool(padding_mask.all(dim=1).any()):
            raise ValueError("a text row holds only padding; drop empty sequences from the batch")
        B, T = input_ids.shape
        return random_mask(B * M, T, cfg.mask_ratio, padding_mask=padding_mask.repeat_interleave(M, dim=0),
                           generator=generator, device=input_ids.device)

    # --- 2. teacher ------------------------------------------------------------------------------------
    def forward_teacher(self, batch: dict) -> tuple[Tensor, Tensor | None]:
        """(targets (B, N, D), cls_target (B, D) or None) from one teacher pass over the clean input.

        Eq.: y = final_norm(1/K sum_{l in top K} layer_norm(f^l)), f^l = FFN output of block l, prenet blocks
        and CLS excluded; cls_target = mean of y over the patches (images with cls_loss > 0)."""
        cfg = self.cfg
        padding_mask = None
        with torch.no_grad():
            if cfg.modality == "vision":
                _, layers = self.teacher(self._images(batch), return_layers="ffn")  # depth x (B, 1 + N, D)
                layers = [layer[:, 1:] for layer in layers]  # depth x (B, N, D): CLS dropped
            else:
                input_ids, padding_mask = self._text(batch)
                if cfg.ema_scope == "blocks":  # released: the teacher's blocks on the student's embedding
                    x = self.backbone.embed(input_ids, padding_mask)  # (B, T, D), with its dropout in training
                    device_type = x.device.type
                    with torch.autocast(device_type=device_type, enabled=False):
                        _, layers = self.teacher.module.encoder(x.float(), padding_mask=padding_mask,
                                                                return_layers="ffn")
                else:
                    _, layers = self.teacher(input_ids, padding_mask, return_layers="ffn")
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
        if self.cfg.modality == "vision":
            images = self._images(batch)
            grid = self.backbone.embed.grid_of(images)
            out = self.backbone.forward_visible(images, ~mask)  # (B * M, 1 + K, D)
            cls_pred = out[:, 0]  # (B * M, D): the student's final CLS output, no head
            decoded = self.decoder(self.decoder_input(out[:, 1:], ~mask, generator), grid)  # (B * M, N, D)
            return decoded, (cls_pred if self.cfg.cls_loss > 0 else None)
        input_ids, padding_mask = self._text(batch)
        padding = padding_mask.repeat_interleave(mask.shape[0] // input_ids.shape[0], dim=0)  # (B * M, T)
        visible = ~mask & ~padding  # (B * M, T) True = enters the student
        out = self.backbone.forward_visible(input_ids, visible, padding_mask)  # (B * M, K, D)
        decoded = self.decoder(self.decoder_input(out, visible, generator), padding)  # (B * M, T, D)
        return decoded, None

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
        mask = self.make_masks(batch, generator)  # (B * M, N)
        targets, cls_target = self.forward_teacher(batch)  # (B, N, D), once per sample
        decoded, cls_pred = self.forward_student(batch, mask, generator)  # (B * M, N, D)
        loss = self.forward_loss(decoded, cls_pred, targets, cls_target, mask)
        with torch.no_grad():
            B, N, D = targets.shape
            M = mask.shape[0] // B
            masked_targets = targets[:, None].expand(B, M, N, D)[mask.view(B, M, N)]  # (|masked|, D)
            if self.cfg.modality == "text":
                eligible = (~self._text(batch)[1]).sum() * M  # real tokens over the M clones
            else:
                eligible = torch.tensor(mask.numel(), device=mask.device)
            masked_pred = decoded[mask]  # (|masked|, D), gathered once for both statistics
            stats = {
                "loss": loss.detach(),
                "target_std": spread(masked_targets),
                "pred_std": spread(masked_pred),
                "explained_variance": explained_variance(masked_pred, masked_targets),  # the loss, scale-free
                "tau": torch.tensor(float(self.tau), device=loss.device),
                "masked_fraction": mask.sum() / eligible.clamp(min=1),
            }
        if self.training and self.num_updates >= self.cfg.collapse_warmup_steps and self.guard.minimums:
            target_std, pred_std = torch.stack([stats["target_std"], stats["pred_std"]]).tolist()  # one sync
            self.guard.check(self.num_updates, {"target_std": target_std, "pred_std": pred_std})
        return loss, stats

    # --- checkpoints: the EMA bookkeeping travels with the state dict ---------------------------------------
    def get_extra_state(self) -> dict:
        return {"tau": float(self.tau), "num_updates": int(self.num_updates),
                "collapse_steps_below": int(self.guard.steps_below)}

    def set_extra_state(self, state: dict) -> None:
        self.tau = float(state["tau"])
        self.num_updates = int(state["num_updates"])
        self.guard.steps_below = int(state.get("collapse_steps_below", 0))

    # --- after the optimiser step ---------------------------------------------------------------------------
    def step_hook(self, step: int, total_steps: int) -> dict:
        """EMA update of the teacher with tau(step) (the decoder is not part of it); returns {"tau": tau}."""
        self.tau = self.cfg.tau_at(step, total_steps)
        self.teacher.update(self.backbone, self.tau)
        self.num_updates = step + 1
        return {"tau": self.tau}
