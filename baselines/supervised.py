"""Supervised training from scratch: the same encoder + a classification head, trained on labels only.

This is the "no pretraining" floor of the comparison (data2vec paper, arXiv 2202.03555, compares
against supervised ViT/DeiT training; BEiT, Bao et al. 2021, Table 1 "training from scratch"): every
pretraining method must beat it with the same encoder, data and budget.

- Vision: tokens (B, 1 + N, D) -> `ImageClassificationHead` (mean of the patch tokens -> LayerNorm ->
  Linear, as data2vec-vision / BEiT fine-tuning; or the CLS token) -> cross-entropy with label smoothing
      L = -sum_c q_c log softmax(z)_c,  q = (1 - eps) onehot(y) + eps / C
- Text: first-token features -> `SequenceClassificationHead` (RoBERTa style) -> cross-entropy, or the
  mean squared error when `num_classes == 1` (regression, e.g. STS-B).

Recipes. "base" vision = the data2vec-vision / BEiT fine-tuning recipe started from random weights
(label smoothing 0.1, mean pooling); text = RoBERTa's sentence-classification head. The optimiser side
(AdamW, cosine/linear schedules, layer decay off when nothing is pretrained) belongs to the training loop.

Differences from the original: no mixup/cutmix, random erasing or repeated augmentation of DeiT's
from-scratch recipe; the head and loss match the project's fine-tuning (`data2vec.finetune`), so the
floor and the fine-tuned pretrained models differ only in their starting weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from data2vec.backbone import build_backbone
from data2vec.config import EncoderConfig, config_error, get_preset, split_overrides
from data2vec.heads import ImageClassificationHead, SequenceClassificationHead

__all__ = ["SupervisedConfig", "Supervised"]


@dataclass
class SupervisedConfig:
    """Encoder + classification head trained on labels (defaults: 10 classes, e.g. CIFAR-10)."""

    encoder: EncoderConfig = field(default_factory=lambda: get_preset("vision", "base"))
    num_classes: int = 10  # classes (CIFAR-10: 10); text: 1 = regression (STS-B), 2 = SST-2 ...
    pooling: str = "mean"  # vision: "mean" (BEiT/data2vec-vision fine-tuning) or "cls" (ViT/DINO)
    head_style: str = "roberta"  # text head: "roberta" (RoBERTa/data2vec-text) or "bert" (pooler)
    label_smoothing: float = 0.1  # vision: 0.1 (BEiT/data2vec-vision fine-tuning); text: 0 (RoBERTa GLUE)
    head_dropout: float = 0.1  # text head dropout (RoBERTa: 0.1)

    def __post_init__(self) -> None:
        if isinstance(self.encoder, dict):
            self.encoder = EncoderConfig.from_dict(self.encoder)
        self.validate()

    def validate(self) -> None:
        def fail(name: str, problem: str, fix: str) -> None:
            raise config_error("SupervisedConfig", name, problem, fix)

        if self.num_classes < 1:
            fail("num_classes", f"must be >= 1, got {self.num_classes}", "set it to the data set's class count")
        if self.encoder.modality == "vision" and self.num_classes < 2:
            fail("num_classes", "image classification needs at least 2 classes", "set it to the class count")
        if self.pooling not in ("mean", "cls"):
            fail("pooling", f"unknown pooling {self.pooling!r}", "use 'mean' (BEiT) or 'cls' (ViT)")
        if self.head_style not in ("roberta", "bert"):
            fail("head_style", f"unknown head style {self.head_style!r}", "use 'roberta' or 'bert'")
        if not 0 <= self.label_smoothing < 1:
            fail("label_smoothing", f"must lie in [0, 1), got {self.label_smoothing}", "use 0.1 (images) or 0 (text)")

    @classmethod
    def preset(cls, modality: str = "vision", name: str = "base", **overrides) -> SupervisedConfig:
        """The named encoder preset + a classification head; overrides may name head or encoder fields."""
        enc_overrides, own_overrides = split_overrides(cls, overrides)
        encoder = get_preset(modality, name, **enc_overrides)
        values: dict = {} if modality == "vision" else dict(num_classes=2, label_smoothing=0.0)  # SST-2-like
        values.update(own_overrides)
        return cls(encoder=encoder, **values)


class Supervised(nn.Module):
    """`loss, stats = model({"images", "labels"})` or `({"input_ids", "padding_mask", "labels"})`."""

    def __init__(self, cfg: SupervisedConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg.encoder)
        dim = cfg.encoder.dim
        if cfg.encoder.modality == "vision":
            self.head = ImageClassificationHead(dim, cfg.num_classes, pooling=cfg.pooling,
                                                eps=cfg.encoder.norm_eps)
        else:
            self.head = SequenceClassificationHead(dim, cfg.num_classes, style=cfg.head_style,
                                                   dropout=cfg.head_dropout)
        for m in self.head.modules():  # the backbone's init scheme: N(0, 0.02) weights, zero biases
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=cfg.encoder.init_std)
                nn.init.zeros_(m.bias)

    @property
    def regression(self) -> bool:
        return self.cfg.encoder.modality == "text" and self.cfg.num_classes == 1

    def logits(self, batch: dict) -> Tensor:
        if self.cfg.encoder.modality == "vision":
            if "images" not in batch:
                raise ValueError(f"a vision Supervised model needs batch['images'], got keys {sorted(batch)}")
            features = self.backbone(batch["images"])  # (B, 1 + N, D)
        else:
            if "input_ids" not in batch:
                raise ValueError(f"a text Supervised model needs batch['input_ids'], got keys {sorted(batch)}")
            features = self.backbone(batch["input_ids"], padding_mask=batch.get("padding_mask"),
                                     token_type_ids=batch.get("token_type_ids"))  # (B, T, D)
        return self.head(features)  # (B, C)

    def forward(self, batch: dict) -> tuple[Tensor, dict]:
        if "labels" not in batch:
            raise ValueError("the supervised baseline needs batch['labels']; use a labelled data set")
        logits = self.logits(batch)
        labels = batch["labels"].to(logits.device)
        if self.regression:
            pred = logits.reshape(-1).float()  # (B, 1) -> (B,)
            loss = F.mse_loss(pred, labels.to(pred.dtype))
            return loss, {"loss": loss.detach()}
        if labels.dtype != torch.long or labels.dim() != 1:
            raise ValueError(f"labels must be class indices, long (B,), got {labels.dtype} {tuple(labels.shape)}")
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.cfg.label_smoothing)
        accuracy = (logits.argmax(dim=-1) == labels).float().mean()
        return loss, {"loss": loss.detach(), "accuracy": accuracy.detach()}

    def step_hook(self, step: int, total_steps: int) -> dict:
        """Nothing to update after the optimiser step."""
        return {}
