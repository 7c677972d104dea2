"""BERT masked language modelling on the project's Transformer core.

What it implements (Devlin et al. 2019, "BERT", section 3.1 "Task #1: Masked LM" and appendix A.1;
released `run_pretraining.py`):

- Corruption: 15% of the non-special tokens are selected; of those 80% become `<mask>`, 10% a random
  token, 10% stay unchanged (`data2vec.masking.bert_mask`). Every selected position is predicted.
- MLM head ("cls/predictions/transform" in the released code):
      h = LayerNorm(GELU(W x_t + b))          for every selected position t        (M, D)
      logits = h E^T + b_out                  E = the input token embedding (tied)  (M, V)
- Loss: cross-entropy of the original token, averaged over the M predictions:
      L = -1/M sum_{t selected} log softmax(logits_t)[x_t]

Recipe. "base" = BERT-base size (12 x 768) with BERT's masking and head; the optimiser side (Adam lr 1e-4,
batch 256, 1M steps, 10k warm-up steps, linear decay, weight decay 0.01) belongs to the training loop.

Differences from the original
- No next-sentence prediction (dropped as in RoBERTa, Liu et al. 2019 section 4.2) and no token types.
- The encoder is this project's (RoBERTa-style post-LN presets with RoBERTa's position offset and
  vocabulary conventions), the same one data2vec-text trains, so the methods compare on equal footing.
- The number of selected tokens per sequence is floor(0.15 n + U) rather than BERT's rounding capped at
  `max_predictions_per_seq` (see `bert_mask`); masks are drawn on the fly every step (dynamic masking,
  RoBERTa section 4.1) instead of being fixed in the pre-processed data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from data2vec.backbone import build_backbone
from data2vec.config import EncoderConfig, config_error, get_preset, split_overrides
from data2vec.masking import bert_mask, special_tokens_mask

__all__ = ["MLMHead", "BertMLMConfig", "BertMLM"]


class MLMHead(nn.Module):
    """Selected features (M, D) -> vocabulary logits (M, V) with the decoder tied to the input embedding."""

    def __init__(self, dim: int, embedding: nn.Embedding, eps: float = 1e-12):
        super().__init__()
        vocab_size, emb_dim = embedding.weight.shape
        if emb_dim != dim:
            raise ValueError(f"the tied embedding has width {emb_dim} but the head width is {dim}")
        self.dense = nn.Linear(dim, dim)  # W, b
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.decoder = nn.Linear(dim, vocab_size, bias=False)
        self.decoder.weight = embedding.weight  # tied: the same Parameter (and storage) as E
        self.bias = nn.Parameter(torch.zeros(vocab_size))  # b_out, zeros as in BERT

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(F.gelu(self.dense(x)))  # (M, D): LN(GELU(W x + b))
        return self.decoder(h) + self.bias  # (M, V): h E^T + b_out


@dataclass
class BertMLMConfig:
    """BERT MLM hyper-parameters (defaults: BERT's 15% / 80-10-10 masking)."""

    encoder: EncoderConfig = field(default_factory=lambda: get_preset("text", "base"))
    # <mask> of this project's trained vocabularies (specials first); the CLI sets it from the tokenizer
    mask_id: int = 4
    # never selected nor used as random replacements (<s> <pad> </s> <unk> <mask>)
    special_ids: tuple[int, ...] = (0, 1, 2, 3, 4)
    mask_prob: float = 0.15  # fraction of tokens selected (BERT section 3.1)
    random_prob: float = 0.1  # of the selected: replaced by a random token (BERT)
    keep_prob: float = 0.1  # of the selected: left unchanged (BERT)

    def __post_init__(self) -> None:
        if isinstance(self.encoder, dict):
            self.encoder = EncoderConfig.from_dict(self.encoder)
        self.special_ids = tuple(int(i) for i in self.special_ids)
        self.validate()

    def validate(self) -> None:
        def fail(name: str, problem: str, fix: str) -> None:
            raise config_error("BertMLMConfig", name, problem, fix)

        if self.encoder.modality != "text":
            fail("encoder", f"BERT MLM needs a text encoder, got modality={self.encoder.modality!r}",
                 "build it with get_preset('text', ...)")
        V = self.encoder.vocab_size
        if not 0 <= self.mask_id < V:
            fail("mask_id", f"{self.mask_id} is outside the vocabulary [0, {V})", "pass the tokenizer's mask id")
        if any(not 0 <= i < V for i in self.special_ids):
            fail("special_ids", f"{self.special_ids} has ids outside [0, {V})", "pass the tokenizer's special ids")
        if not 0 < self.mask_prob <= 1:
            fail("mask_prob", f"must lie in (0, 1], got {self.mask_prob}", "BERT uses 0.15")
        if self.random_prob < 0 or self.keep_prob < 0 or self.random_prob + self.keep_prob > 1:
            fail("random_prob", f"random_prob={self.random_prob} and keep_prob={self.keep_prob} must be >= 0 and "
                 f"sum to at most 1", "BERT uses 0.1 and 0.1")

    @classmethod
    def preset(cls, modality: str = "text", name: str = "base", **overrides) -> BertMLMConfig:
        """The named text encoder preset with BERT's masking; overrides may name MLM or encoder fields.
        "base" uses the official RoBERTa vocabulary's ids (<mask> = 50264) unless overridden."""
        if modality != "text":
            raise ValueError(f"BERT MLM is a text method; got modality={modality!r} (use DINO for images)")
        enc_over, own_over = split_overrides(cls, overrides)
        encoder = get_preset("text", name, **enc_over)
        values: dict = {}
        if name == "base" and encoder.vocab_size == 50265:  # RoBERTa's vocabulary: <mask> is the last id
            values = dict(mask_id=50264, special_ids=(0, 1, 2, 3, 50264))
        values.update(own_over)
        return cls(encoder=encoder, **values)


class BertMLM(nn.Module):
    """Backbone + tied MLM head; `loss, stats = bert({"input_ids", "padding_mask"})`."""

    def __init__(self, cfg: BertMLMConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg.encoder)
        self.head = MLMHead(cfg.encoder.dim, self.backbone.embed.tokens, eps=cfg.encoder.norm_eps)
        nn.init.normal_(self.head.dense.weight, std=cfg.encoder.init_std)  # BERT init: N(0, 0.02), zero bias
        nn.init.zeros_(self.head.dense.bias)

    def corrupt(self, input_ids: Tensor, padding_mask: Tensor | None,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """BERT 80/10/10 corruption. Returns (corrupted ids (B, T), mask (B, T) True = selected,
        special (B, T) True = special token or padding, never selected)."""
        cfg = self.cfg
        special = special_tokens_mask(input_ids, cfg.special_ids, padding_mask)  # (B, T)
        corrupted, mask = bert_mask(input_ids, mask_id=cfg.mask_id, vocab_size=cfg.encoder.vocab_size,
                                    special_mask=special, mask_prob=cfg.mask_prob, random_prob=cfg.random_prob,
                                    keep_prob=cfg.keep_prob, special_ids=cfg.special_ids, generator=generator)
        return corrupted, mask, special

    def mlm_loss(self, features: Tensor, targets: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-entropy over the selected positions only.

        features (B, T, D), targets (B, T) original ids, mask bool (B, T) True = predicted.
        Returns (loss averaged over the M predictions, number of correct predictions)."""
        if mask.dtype != torch.bool or mask.shape != targets.shape:
            raise ValueError(f"mask must be bool {tuple(targets.shape)}, got {mask.dtype} {tuple(mask.shape)}")
        selected = features[mask]  # (M, D): only the selected positions reach the head
        if selected.shape[0] == 0:  # nothing selected (very short sequences): no signal, keep the graph
            zero = features.sum() * 0.0
            return zero, torch.zeros((), dtype=torch.long, device=features.device)
        logits = self.head(selected)  # (M, V)
        labels = targets[mask]  # (M,)
        loss = F.cross_entropy(logits.float(), labels)  # -1/M sum log softmax(logits)[label]
        correct = (logits.argmax(dim=-1) == labels).sum()
        return loss, correct

    def forward(self, batch: dict) -> tuple[Tensor, dict]:
        if "input_ids" not in batch:
            raise ValueError(f"BertMLM needs a text batch {{'input_ids', 'padding_mask'}}, got keys {sorted(batch)}")
        input_ids = batch["input_ids"]
        padding_mask = batch.get("padding_mask")
        corrupted, mask, special = self.corrupt(input_ids, padding_mask)
        features = self.backbone(corrupted, padding_mask=padding_mask,
                                 token_type_ids=batch.get("token_type_ids"))  # (B, T, D)
        loss, correct = self.mlm_loss(features, input_ids, mask)
        n_selected = mask.sum().double().clamp(min=1)
        n_eligible = (~special).sum().double().clamp(min=1)
        stats = {  # 0-dim tensors: the engine moves them to the host in one transfer
            "loss": loss.detach(),
            "mlm_accuracy": correct.double() / n_selected,  # of the predicted (selected) tokens
            "masked_fraction": mask.sum().double() / n_eligible,  # of the eligible (non-special, non-pad) tokens
        }
        return loss, stats

    def step_hook(self, step: int, total_steps: int) -> dict:
        """BERT has no per-step state (no teacher, no schedules of its own)."""
        return {}
