"""The configuration of one fine-tuning run (`FinetuneConfig`), validated, with the two published recipes.

Recipes (the defaults of `FinetuneConfig` are the text recipe; `vision_defaults()` the image one)
- RoBERTa / data2vec-text on GLUE (fairseq `examples/roberta/README.glue.md`; data2vec paper section 5.2
  fine-tunes "as RoBERTa"): Adam(0.9, 0.98), eps 1e-6, weight decay 0.1, lr 1e-5 or 2e-5, batch 16 or 32,
  10 epochs, warm-up 6% of the updates then linear decay, no layer decay.
- BEiT / data2vec-vision ViT-B on ImageNet (BEiT appendix; data2vec paper section 5.1): AdamW(0.9, 0.999),
  weight decay 0.05, lr 4e-3 at batch 1024 (scale linearly with the batch: lr = 4e-3 * batch / 1024),
  layer decay 0.65, cosine decay to 1e-6, label smoothing 0.1, 100 epochs with 20 warm-up epochs,
  mixup/cutmix (not implemented here).

Differences from the originals: no mixup/cutmix, random erasing or model EMA for images; no gradient
accumulation (see `finetune.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import config_error
from .heads import TASK_TYPES
from .schedules import FINETUNE_SCHEDULES


@dataclass
class FinetuneConfig:
    """Hyper-parameters of one fine-tuning run (defaults: RoBERTa's GLUE recipe, see the module docstring)."""

    task_type: str = "classification"  # "classification" (CE), "regression" (MSE, STS-B) or "span" (SQuAD)
    epochs: int = 10  # RoBERTa GLUE: 10; BEiT ImageNet ViT-B: 100; SQuAD (BERT): 2-3
    batch_size: int = 32  # RoBERTa GLUE: 16 or 32
    lr: float = 2e-5  # peak lr; RoBERTa GLUE: 1e-5 or 2e-5; from scratch / tiny models: 1e-4 .. 1e-3
    min_lr: float = 0.0  # lr at the end of the decay (RoBERTa: 0; BEiT: 1e-6)
    weight_decay: float = 0.1  # RoBERTa GLUE: 0.1; BEiT fine-tuning: 0.05
    betas: tuple[float, float] = (0.9, 0.98)  # RoBERTa: (0.9, 0.98); BEiT/ViT: (0.9, 0.999)
    eps: float = 1e-6  # Adam epsilon (RoBERTa 1e-6; BEiT 1e-8)
    warmup_ratio: float = 0.06  # fraction of all updates spent warming up (RoBERTa GLUE: 6%; BEiT: 20/100 epochs)
    schedule: str = "linear"  # decay after warm-up: "linear" (RoBERTa) or "cosine" (BEiT/data2vec-vision)
    layer_decay: float | None = None  # layer-wise lr decay; None = off (text); 0.65 for data2vec-vision ViT-B
    label_smoothing: float = 0.0  # classification only; 0.1 for images (BEiT/data2vec-vision), 0 for GLUE
    clip_grad: float | None = None  # max gradient norm; None = off (RoBERTa GLUE uses none; BEiT 3.0 optional)
    main_metric: str = "score"  # key of the metric dict that picks the best epoch ("score" GLUE, "f1" SQuAD)
    greater_is_better: bool = True  # False for losses/errors
    seed: int = 1  # RoBERTa's fairseq default seed
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", ...
    eval_batch_size: int | None = None  # None = 2 x batch_size (no gradients, fits twice as many)
    log_every: int = 50  # print a training line every this many updates; 0 = only per epoch
    save_best: bool = True  # write the best epoch's weights to <out>/best/
    eval_every: int = 1  # epochs between evaluations (the last epoch is always evaluated); raise it for many epochs
    # with a test_set: score it too after every evaluated epoch (history "test_<metric>"), so that the optimistic
    # best-epoch-on-test number can be reported beside the selected one, labelled; it never selects anything
    test_every_epoch: bool = False
    bf16: bool = False  # bf16 autocast around every forward pass (data2vec.precision); weights and Adam stay fp32
    compile: bool = False  # torch.compile the model (the same math; the first epoch pays the compilation)

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        self.validate()

    def validate(self) -> None:
        def fail(name: str, problem: str, fix: str) -> None:
            raise config_error("FinetuneConfig", name, problem, fix)

        if self.task_type not in TASK_TYPES:
            fail("task_type", f"unknown task type {self.task_type!r}", f"use one of {TASK_TYPES}")
        if self.schedule not in FINETUNE_SCHEDULES:
            fail("schedule", f"unknown schedule {self.schedule!r}", f"use one of {FINETUNE_SCHEDULES}")
        if self.epochs < 1:
            fail("epochs", f"must be >= 1, got {self.epochs}", "train for at least one epoch")
        if self.batch_size < 1:
            fail("batch_size", f"must be >= 1, got {self.batch_size}", "use e.g. 32 (text) or 64 (images)")
        if not self.lr > 0:
            fail("lr", f"must be > 0, got {self.lr}", "use 2e-5 for pretrained text models, 1e-3 for tiny ones")
        if self.min_lr < 0 or self.min_lr > self.lr:
            fail("min_lr", f"must lie in [0, lr={self.lr}], got {self.min_lr}", "use 0 or e.g. 1e-6")
        if not 0 <= self.warmup_ratio < 1:
            fail("warmup_ratio", f"must lie in [0, 1), got {self.warmup_ratio}", "use 0.06 (RoBERTa) or 0.1")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            fail("layer_decay", f"must lie in (0, 1], got {self.layer_decay}", "use 0.65 (ViT-B) or 0.75, or None")
        if not 0 <= self.label_smoothing < 1:
            fail("label_smoothing", f"must lie in [0, 1), got {self.label_smoothing}", "use 0.1 for images or 0")
        if self.clip_grad is not None and self.clip_grad <= 0:
            fail("clip_grad", f"must be > 0 or None, got {self.clip_grad}", "use None or e.g. 1.0")
        if self.eval_every < 1:
            fail("eval_every", f"must be >= 1, got {self.eval_every}", "evaluate every epoch (1) or every few")
        if self.weight_decay < 0:
            fail("weight_decay", f"must be >= 0, got {self.weight_decay}", "use 0.1 (text) or 0.05 (images)")

    @classmethod
    def vision_defaults(cls, **overrides) -> FinetuneConfig:
        """BEiT / data2vec-vision recipe, reduced scale: AdamW(0.9, 0.999), wd 0.05, layer decay 0.65,
        cosine to 1e-6, label smoothing 0.1, warm-up 20% (20 of 100 epochs); lr for batch 64 at
        4e-3 * 64 / 1024 = 2.5e-4."""
        values = dict(task_type="classification", epochs=10, batch_size=64, lr=2.5e-4, min_lr=1e-6,
                      weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8, warmup_ratio=0.2, schedule="cosine",
                      layer_decay=0.65, label_smoothing=0.1, main_metric="accuracy")
        values.update(overrides)
        return cls(**values)
