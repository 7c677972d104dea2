"""data2vec v1 for text and vision: student + EMA teacher + regression head -> loss and statistics.

data2vec (Baevski et al. 2022, arXiv 2202.03555), section 3 "Method" (docs/design.md section 4):

1. the student encodes the masked input (text: `<mask>` ids / BERT 80/10/10; vision: a learned mask
   embedding in place of the masked patches);
2. the teacher, an EMA of the student in eval mode and without gradients, encodes the unmasked input;
3. Eq. (targets): y_t = 1/K sum_{l=L-K+1}^{L} norm(a_t^l) at the masked positions (`targets.py`);
4. a regression head on the student's final output at the masked positions predicts y_t;
5. Eq. (loss): Smooth L1 (`losses.py`); after the optimiser step, `step_hook` moves the teacher:
   Delta <- tau Delta + (1 - tau) theta (`ema.py`).

Collapse watch (fairseq logs `target_var` / `pred_var` and stops below `min_target_var = 0.1` /
`min_pred_var = 0.01` after 5000 updates): `target_std` and `pred_std` are the standard deviations
across the masked tokens of every feature, averaged over the features, sqrt(var_n(y_nd) + 1e-6) averaged
over d. When either stays below its threshold for `collapse_patience` training steps after
`collapse_warmup_steps` updates, `CollapseError` stops the run with advice (`diagnostics.CollapseGuard`).

The step reads as `make_masks` -> `forward_student` -> `forward_teacher` -> `forward_loss` (MAE's
`forward_encoder` / `forward_decoder` / `forward_loss`; data2vec 2.0 in `v2.py` uses the same names). What
differs by modality (batch keys, masking, CLS handling, recipe rows) is the modality plug-in's
(`modalities/`); the EMA teacher, tau schedule and collapse guard are `teacher.py`'s, shared with `v2.py`.

Differences from the original:
- text: the teacher encodes the unmasked input (the paper), not the masked one (released code, fairseq
  issue #4881); `loss_on="selected"` (all selected tokens, the paper) or `"mask_token"` (released code).
- the variance in the statistics is the population variance (fairseq: unbiased), so one masked
  token does not give NaN.
- the shared (text) embeddings of the teacher are copies refreshed at every EMA step (see `ema.py`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from . import modalities
from .backbone import build_backbone
from .config import EncoderConfig, check_choices, config_error, from_dict_checked, get_preset, split_overrides
from .diagnostics import CollapseError, explained_variance, spread
from .ema import EMA_SCOPES
from .losses import REDUCTIONS, regression_loss
from .targets import TARGET_NORMS, build_targets
from .teacher import TauSchedule, TeacherBookkeeping

__all__ = ["Data2VecConfig", "Data2Vec", "CollapseError", "regression_head"]

TEXT_MASKINGS = ("bert", "span")
HEADS = ("linear", "mlp")
TARGETS = ("ffn", "block")
LOSS_ON = ("selected", "mask_token")
BEIT_MIN_BLOCK_FRACTION = 16 / 196  # BEiT: blocks of at least 16 of 196 patches (about 8% of the grid)


@dataclass
class Data2VecConfig(TauSchedule):
    """data2vec v1 method configuration. Defaults are the paper's text recipe (docs/design.md section 4 table);
    use `Data2VecConfig.preset(modality, name)` for the vision recipe and the reduced-scale ones."""

    encoder: EncoderConfig = field(default_factory=lambda: get_preset("text", "base"))
    # --- text masking ------------------------------------------------------------------------------
    text_masking: str = "bert"  # "bert" = 80/10/10 (paper main result), "span" = spans of 4, all <mask> (released)
    mask_prob: float = 0.15  # paper: 15% of the tokens; released span config: 0.35
    random_prob: float = 0.1  # paper (BERT): 10% of the selected tokens become a random token
    keep_prob: float = 0.1  # paper (BERT): 10% of the selected tokens stay unchanged
    span_length: int = 4  # released config: mask_multiple_length = 4 (text_masking="span" only)
    # <mask> id: 50264 in RoBERTa's vocabulary, 4 in ours (tasks/text/tokenizer); CLI: tokenizer.mask_id
    mask_id: int = 50264
    special_ids: tuple[int, ...] = (0, 1, 2, 3, 50264)  # RoBERTa <s> <pad> </s> <unk> <mask>; never selected, never
    #                                                     drawn as random ids (pad_id and mask_id are always added)
    # --- vision masking (BEiT block-wise) --------------------------------------------------------
    mask_ratio: float = 120 / 196  # data2vec-vision: 120 of 196 patches; reduced scale: 0.6
    min_block: int = 0  # smallest block in patches; 0 = scaled to the grid (16/196 of it: 16 at 14x14, 5 at 8x8)
    max_block: int | None = None  # BEiT: no limit besides the mask count
    mask_aspect: float = 0.3  # BEiT: aspect ratio log-uniform in [0.3, 1/0.3]
    # --- targets ---------------------------------------------------------------------------------
    target: str = "ffn"  # "ffn" (text: FFN output before the last residual) or "block" (vision: residual stream)
    top_k: int = 10  # paper: top 10 of 12 blocks (text), 6 of 12 (vision)
    layer_norm: str = "layer"  # per-layer norm without affine: "layer" (text, vision), "instance" (speech)
    final_norm: str = "none"  # after averaging: "none" (text), "layer" (released vision code)
    # --- head and loss ---------------------------------------------------------------------------
    head: str = "linear"  # "linear" (paper), "mlp" = Linear(D, 2D)-GELU-Linear(2D, D) (released text config)
    loss_beta: float = 4.0  # Smooth L1 transition: 4 (text), 2 (vision); 0 = L2
    loss_reduction: str = "sum"  # "sum" over D, mean over tokens (text); "mean" over tokens x D (vision)
    loss_scale: float | None = None  # multiplies the loss; None = 1 (released text code uses 1/sqrt(D))
    loss_on: str = "selected"  # text: "selected" = all selected tokens (paper), "mask_token" = only <mask> (released)
    # --- EMA teacher -----------------------------------------------------------------------------
    tau_start: float = 0.999  # paper (text): 0.999 ...
    tau_end: float = 0.9999  # ... -> 0.9999
    tau_ramp_steps: float = 100_000  # paper: 100k updates (released: 300k); 0 = constant tau_end;
    #                                  a value in (0, 1) = that fraction of the run (total_steps)
    ema_scope: str = "blocks"  # "blocks" = embeddings shared (text, paper), "encoder" = all averaged (vision)
    # --- collapse guard ---------------------------------------------------------------------------
    collapse_min_target_std: float = 0.1  # fairseq min_target_var = 0.1; 0 disables the guard
    collapse_min_pred_std: float = 0.01  # fairseq min_pred_var = 0.01
    collapse_warmup_steps: int = 5000  # fairseq: checked after 5000 updates
    collapse_patience: int = 10  # consecutive training steps below a threshold before stopping (ours)

    def __post_init__(self) -> None:
        if isinstance(self.encoder, dict):
            self.encoder = EncoderConfig.from_dict(self.encoder)
        self.special_ids = tuple(int(i) for i in self.special_ids)
        needed = modalities.get(self.modality).v1_encoder  # e.g. vision: the student needs a mask embedding
        if any(getattr(self.encoder, name) != value for name, value in needed.items()):
            self.encoder = self.encoder.replace(**needed)
        self.validate()

    @property
    def modality(self) -> str:
        return self.encoder.modality

    def validate(self) -> None:
        def fail(name: str, problem: str, fix: str) -> None:
            raise config_error("Data2VecConfig", name, problem, fix)

        check_choices(self, dict(text_masking=TEXT_MASKINGS, target=TARGETS, layer_norm=TARGET_NORMS,
                                 final_norm=TARGET_NORMS, head=HEADS, loss_reduction=REDUCTIONS, loss_on=LOSS_ON,
                                 ema_scope=EMA_SCOPES))
        depth = self.encoder.depth
        if not 1 <= self.top_k <= depth:
            fail("top_k", f"{self.top_k} is outside [1, {depth}] (the encoder depth)",
                 "average the top 3/4 to 5/6 of the blocks, at least 2")
        for name in ("mask_prob", "random_prob", "keep_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                fail(name, f"must lie in [0, 1], got {getattr(self, name)}", "BERT uses 0.15 / 0.1 / 0.1")
        if self.random_prob + self.keep_prob > 1.0:
            fail("keep_prob", "random_prob + keep_prob exceeds 1", "BERT uses 0.1 + 0.1")
        if not 0.0 < self.mask_ratio < 1.0:
            fail("mask_ratio", f"must lie in (0, 1), got {self.mask_ratio}", "data2vec-vision masks 120/196 = 0.61")
        if not 0.0 < self.mask_aspect <= 1.0:
            fail("mask_aspect", f"must lie in (0, 1], got {self.mask_aspect}", "BEiT uses 0.3")
        if self.loss_beta < 0:
            fail("loss_beta", f"must be >= 0, got {self.loss_beta}", "use 4 (text), 2 (vision) or 0 (L2)")
        self.check_teacher(fail, tau_fix="data2vec uses 0.999 -> 0.9999")
        if self.span_length < 1:
            fail("span_length", f"must be >= 1, got {self.span_length}", "the released config uses 4")
        modalities.get(self.modality).check_v1(self, fail)

    # --- derived quantities ---------------------------------------------------------------------------
    def block_sizes(self, num_patches: int) -> tuple[int, int]:
        """(patches to mask, smallest block) for a grid of num_patches."""
        num_masked = int(round(self.mask_ratio * num_patches))
        min_block = self.min_block if self.min_block > 0 else max(1, int(round(BEIT_MIN_BLOCK_FRACTION * num_patches)))
        return num_masked, min(min_block, max(num_masked, 1))

    def all_special_ids(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.special_ids) | {self.mask_id, self.encoder.pad_id}))

    # --- presets and (de)serialisation -------------------------------------------------------------
    @classmethod
    def preset(cls, modality: str, name: str = "base", **overrides) -> Data2VecConfig:
        """"base": the paper's recipe (the modality's `v1_recipe`, docs/design.md section 4); "tiny" / "mini" /
        "small": that recipe with the reduced-scale changes of its `v1_reduced` (docs/design.md section 8).
        Overrides may name method fields or encoder fields (a name both have, `final_norm`, is the method's)."""
        plugin = modalities.get(modality)
        enc_over, own_over = split_overrides(cls, overrides)
        encoder = get_preset(modality, name, **{**plugin.v1_encoder, **enc_over})
        values = plugin.v1_values(encoder, reduced=name != "base", overrides=own_over)
        values.update(own_over)
        return cls(encoder=encoder, **values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Data2VecConfig:
        return from_dict_checked(cls, values)


# ---------------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------------


def regression_head(kind: str, dim: int) -> nn.Module:
    """The regression head: Linear(D, D) (paper) or Linear(D, 2D)-GELU-Linear(2D, D) (released text)."""
    if kind == "linear":
        return nn.Linear(dim, dim)
    return nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))


class Data2Vec(TeacherBookkeeping):
    """data2vec v1: `loss, stats = model(batch)`; call `model.step_hook(step, total_steps)` after each
    optimiser step. `backbone` is the student (what fine-tuning keeps), `teacher` its EMA copy.

    The training step reads in named steps: `make_masks` -> `forward_student` -> `forward_teacher` ->
    `forward_loss`. Throughout, `loss_mask` is bool (B, N), True = a position whose target enters the loss
    (the masked patches; for text the selected tokens, or only the `<mask>` ones with loss_on="mask_token")."""

    def __init__(self, cfg: Data2VecConfig):
        super().__init__()
        self.cfg = cfg
        self.modality = modalities.get(cfg.modality)  # reads batches, masks, feeds student and teacher
        self.backbone = build_backbone(cfg.encoder)
        self.init_teacher(cfg, method="data2vec")  # teacher = EMA copy of the backbone, tau, collapse guard
        self.head = regression_head(cfg.head, cfg.encoder.dim)

    # --- inputs and masks (the modality's) ----------------------------------------------------------------
    def read_batch(self, batch: dict) -> dict:
        """The batch with its required keys checked; text batches get a padding_mask if they lack one."""
        return self.modality.read_batch(batch, self.cfg.encoder.pad_id, "data2vec")

    def make_masks(self, batch: dict, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """-> (the student's input, loss_mask bool (B, N)). Text: BERT/span-corrupted ids (B, T); images: the
        images themselves (the mask embedding is applied inside the patch embedding)."""
        return self.modality.v1_masks(self, batch, generator)

    # --- the training step, in named steps -------------------------------------------------------------
    def forward_student(self, student_input: Tensor, loss_mask: Tensor, batch: dict) -> Tensor:
        """The student's final output for every position (B, N, D) (images: patch tokens, CLS dropped)."""
        return self.modality.v1_student(self, student_input, loss_mask, batch)

    @torch.no_grad()
    def forward_teacher(self, batch: dict) -> Tensor:
        """Eq. (targets): y_t = 1/K sum_l norm(a_t^l), then the optional final norm, for every position
        (B, N, D), from the EMA teacher on the unmasked input."""
        cfg = self.cfg
        layers, padding_mask = self.modality.v1_teacher_layers(self, batch)  # K x (B, N, D), target positions
        return build_targets(layers, cfg.top_k, layer_norm=cfg.layer_norm, final_norm=cfg.final_norm,
                             padding_mask=padding_mask)  # (B, N, D)

    def forward_loss(self, student_out: Tensor, targets: Tensor, loss_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Eq. (loss): Smooth L1 between head(student) and the targets at the loss positions.
        -> (loss, predictions (M, D), targets (M, D)), M = loss_mask.sum()."""
        cfg = self.cfg
        target = targets[loss_mask]  # (B, N, D) -> (M, D)
        pred = self.head(student_out[loss_mask])  # (M, D): gather first, then the head
        if target.shape[0] == 0:  # nothing selected in this batch (very short sequences): a zero loss keeps the graph
            return pred.sum() * 0.0, pred, target
        return regression_loss(pred, target, beta=cfg.loss_beta, reduction=cfg.loss_reduction,
                               scale=cfg.loss_scale), pred, target

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
        batch = self.read_batch(batch)
        student_input, loss_mask = self.make_masks(batch, generator)
        student_out = self.forward_student(student_input, loss_mask, batch)  # (B, N, D)
        targets = self.forward_teacher(batch)  # (B, N, D)
        loss, pred, target = self.forward_loss(student_out, targets, loss_mask)
        eligible = self.modality.eligible(self, batch, loss_mask).clamp(min=1)  # positions that could have been masked
        stats = {  # 0-dim tensors: the engine moves them to the host in one transfer
            "loss": loss.detach(),
            "target_std": spread(target),
            "pred_std": spread(pred),
            "explained_variance": explained_variance(pred, target),  # the loss's scale-free reading
            "tau": float(self.tau),
            "masked_fraction": loss_mask.sum().double() / eligible,
        }
        if target.shape[0] > 1:  # the spread of one token says nothing
            self.check_collapse(stats)
        return loss, stats
