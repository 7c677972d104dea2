"""Fine-tuning heads on top of a backbone's features, and `TaskModel` = backbone + head.

- `SequenceClassificationHead`: sentence(-pair) classification or regression (GLUE) from the first
  token. Two styles, matching the released checkpoints so their heads import one to one:
    roberta (RoBERTa / data2vec-text, data2vec paper section 4 fine-tuning, fairseq
      `RobertaClassificationHead`): logits = W2 Drop(tanh(W1 Drop(x_0) + b1)) + b2
    bert (Devlin et al. 2019, section 4.1): pooled = tanh(Wp x_0 + bp) ("pooler");
      logits = Wc Drop(pooled) + bc
  `num_labels = 1` is regression (STS-B): the single logit is the predicted score.
- `QuestionAnsweringHead`: extractive span QA (BERT section 4.2, SQuAD): one linear layer gives every
  token a start and an end score, [s_t, e_t] = W x_t + b.
- `ImageClassificationHead`: BEiT / data2vec-vision fine-tuning (Bao et al. 2021, section 3.2;
  data2vec paper section 4 fine-tuning): logits = W LN(mean_{i>0} x_i) + b over the patch tokens (CLS
  dropped); or ViT (Dosovitskiy et al. 2021, eq. 4): logits = W x_0 + b on the CLS token, whose final
  norm the backbone has already applied.
- `CTCHead`: speech recognition with CTC (data2vec paper section 4.3; wav2vec 2.0 fine-tuning, HF
  `Data2VecAudioForCTC.lm_head`): per-frame logits z_t = W Drop(x_t) + b over the characters, blank = index 0.
  In a `TaskModel` it returns (logits (B, T, V), frame padding (B, T) or None): the CTC loss and the decoding
  read only the real frames.
- `AudioClassificationHead`: keyword spotting on speech frames (HF `Data2VecAudioForSequenceClassification`):
  logits = W_c (1/|R| sum_{t in R} (W_p x_t + b_p)) + b_c, the mean over the real frames R of a projection.
- `task_loss`, the loss of each task type:
    "classification": cross-entropy with optional label smoothing eps,
        L = -sum_c q_c log softmax(z)_c,  q = (1 - eps) onehot(y) + eps / C   (Szegedy et al. 2016, section 7)
    "regression" (STS-B): mean squared error, L = mean_i (z_i - y_i)^2 (RoBERTa / fairseq sentence_prediction)
    "span" (SQuAD): L = (CE(start_logits, s) + CE(end_logits, e)) / 2 over the tokens (BERT section 4.2);
        padded positions are excluded from the softmax.
    "ctc" (speech recognition): the CTC loss lives with the speech data (`tasks/audio/ctc.py`), which the core does
        not import: `finetune(..., loss_fn=...)` receives it.

Differences from the originals: none in the math. The heads take the backbone's features (B, T, D)
rather than the whole model, so the same heads serve every pretraining method of this project.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SEQUENCE_STYLES = ("roberta", "bert")
POOLINGS = ("mean", "cls")
TASK_TYPES = ("classification", "regression", "span", "ctc")  # the task types `finetune` trains


def _check_features(features: Tensor, dim: int, who: str) -> None:
    if features.dim() != 3 or features.shape[-1] != dim:
        raise ValueError(f"{who} expects backbone features (B, T, {dim}), got {tuple(features.shape)}; "
                         f"build the head with the backbone's width")


class SequenceClassificationHead(nn.Module):
    """First-token features (B, T, D) -> logits (B, num_labels); see the module docstring for the styles."""

    def __init__(self, dim: int, num_labels: int, *, style: str = "roberta", dropout: float = 0.1):
        super().__init__()
        if style not in SEQUENCE_STYLES:
            raise ValueError(f"unknown head style {style!r}; use one of {SEQUENCE_STYLES} "
                             f"('roberta' for RoBERTa/data2vec-text checkpoints, 'bert' for BERT)")
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1 (1 = regression such as STS-B), got {num_labels}")
        self.dim, self.num_labels, self.style = dim, num_labels, style
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(dim, dim)  # roberta: the hidden layer W1; bert: the pooler Wp
        self.out = nn.Linear(dim, num_labels)  # W2 (roberta) / Wc (bert)

    def forward(self, features: Tensor) -> Tensor:
        _check_features(features, self.dim, "SequenceClassificationHead")
        x = features[:, 0]  # (B, D): <s> / [CLS]
        if self.style == "roberta":
            x = torch.tanh(self.dense(self.dropout(x)))  # tanh(W1 Drop(x_0) + b1)
        else:
            x = torch.tanh(self.dense(x))  # BERT pooler: tanh(Wp x_0 + bp)
        return self.out(self.dropout(x))  # (B, num_labels)


class QuestionAnsweringHead(nn.Module):
    """Features (B, T, D) -> (start_logits (B, T), end_logits (B, T)): [s_t, e_t] = W x_t + b."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.qa = nn.Linear(dim, 2)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        _check_features(features, self.dim, "QuestionAnsweringHead")
        logits = self.qa(features)  # (B, T, 2)
        start, end = logits.unbind(-1)  # each (B, T)
        return start.contiguous(), end.contiguous()


class ImageClassificationHead(nn.Module):
    """Tokens (B, 1 + N, D), CLS first -> logits (B, num_classes).

    pooling="mean": mean of the patch tokens (CLS dropped) -> LayerNorm -> Linear (BEiT/data2vec-vision;
        use it on a backbone without final norm, `final_norm=False`, as their fine-tuned models do).
    pooling="cls": the CLS token -> Linear (ViT/DINO; the backbone's final norm is already applied).
    norm: LayerNorm before the classifier; None (default) = on for "mean", off for "cls".
    """

    def __init__(self, dim: int, num_classes: int, *, pooling: str = "mean", norm: bool | None = None,
                 eps: float = 1e-6):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; use one of {POOLINGS} "
                             f"('mean' for BEiT/data2vec-vision, 'cls' for ViT/DINO)")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.dim, self.num_classes, self.pooling = dim, num_classes, pooling
        use_norm = (pooling == "mean") if norm is None else norm
        self.norm = nn.LayerNorm(dim, eps=eps) if use_norm else None  # eps 1e-6: BEiT fc_norm
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        _check_features(features, self.dim, "ImageClassificationHead")
        if self.pooling == "mean":
            if features.shape[1] < 2:
                raise ValueError("mean pooling needs at least one patch token after the CLS token")
            x = features[:, 1:].mean(dim=1)  # (B, D): (1/N) sum_{i=1..N} x_i
        else:
            x = features[:, 0]  # (B, D): CLS
        if self.norm is not None:
            x = self.norm(x)
        return self.classifier(x)  # (B, num_classes)


class CTCHead(nn.Module):
    """Speech frames (B, T, D) -> per-frame character logits (B, T, V) (HF `lm_head` after `final_dropout`)."""

    reads_frame_padding = True  # TaskModel passes the frame padding and returns (logits, padding)

    def __init__(self, dim: int, vocab_size: int, *, dropout: float = 0.0):
        super().__init__()
        self.dim, self.vocab_size = dim, vocab_size
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, vocab_size)

    def forward(self, features: Tensor, padding: Tensor | None = None) -> Tensor:
        _check_features(features, self.dim, "CTCHead")
        return self.proj(self.dropout(features))  # z_t = W Drop(x_t) + b, (B, T, V)


class AudioClassificationHead(nn.Module):
    """Speech frames (B, T, D) and their padding (B, T) (True = pad) -> logits (B, num_classes): a projection of
    every frame, averaged over the real frames, then a linear classifier (HF `projector` / `classifier`)."""

    reads_frame_padding = True

    def __init__(self, dim: int, num_classes: int, *, proj_dim: int = 256):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.dim, self.num_classes, self.proj_dim = dim, num_classes, proj_dim
        self.projector = nn.Linear(dim, proj_dim)  # HF classifier_proj_size = 256
        self.classifier = nn.Linear(proj_dim, num_classes)

    def forward(self, features: Tensor, padding: Tensor | None = None) -> Tensor:
        _check_features(features, self.dim, "AudioClassificationHead")
        h = self.projector(features)  # (B, T, P): W_p x_t + b_p
        if padding is None:
            pooled = h.mean(dim=1)  # (B, P)
        else:
            real = (~padding).unsqueeze(-1).to(h.dtype)  # (B, T, 1) 1 = real frame
            pooled = (h * real).sum(dim=1) / real.sum(dim=1).clamp_min(1.0)  # (B, P): mean over the real frames
        return self.classifier(pooled)  # (B, num_classes)


# Keys of a batch that are model inputs; every other key (labels, ids, offsets) is for the loss/metrics.
TEXT_INPUTS = ("input_ids", "padding_mask", "token_type_ids")
VISION_INPUTS = ("images",)
AUDIO_INPUTS = ("waveform", "lengths")


class TaskModel(nn.Module):
    """backbone + head: forward(**batch) -> head(backbone(inputs)).

    Text batches give `input_ids` (B, T), optional `padding_mask` (bool, True = pad) and
    `token_type_ids`; vision batches give `images` (B, C, H, W); speech batches `waveform` (B, S) and `lengths`
    (B,). Keys that are not model inputs (labels, start/end positions, transcripts) are for the loss and are not
    passed on. A head that reads the frame padding (speech) gets it; a CTC head's output is (logits, padding).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def features(self, **inputs) -> Tensor:
        if "input_ids" in inputs:
            return self.backbone(inputs["input_ids"], padding_mask=inputs.get("padding_mask"),
                                 token_type_ids=inputs.get("token_type_ids"))
        if "images" in inputs:
            return self.backbone(inputs["images"])
        if "waveform" in inputs:
            return self.backbone(inputs["waveform"], inputs.get("lengths"))
        raise ValueError(f"TaskModel needs `input_ids` (text), `images` (vision) or `waveform` (audio), got keys "
                         f"{sorted(inputs)}")

    def forward(self, **inputs):
        features = self.features(**inputs)  # (B, T, D)
        if not getattr(self.head, "reads_frame_padding", False):
            return self.head(features)
        padding = self.backbone.frame_padding(inputs.get("lengths"), features.shape[1])  # (B, T) True = pad, or None
        out = self.head(features, padding)
        return (out, padding) if isinstance(self.head, CTCHead) else out



# ---- the losses of the task types, and what a batch feeds the TaskModel ------------------------------------


def task_loss(task_type: str, outputs, batch: Mapping[str, Tensor], label_smoothing: float = 0.0) -> Tensor:
    """The loss of one batch (see the module docstring for the three formulas)."""
    if task_type == "classification":
        return F.cross_entropy(outputs, batch["labels"], label_smoothing=label_smoothing)  # outputs (B, C)
    if task_type == "regression":
        pred = outputs.reshape(-1)  # (B, 1) -> (B,)
        return F.mse_loss(pred, batch["labels"].to(pred.dtype))
    if task_type == "ctc":
        raise ValueError("task_loss: the CTC loss is tasks.audio.ctc's; fix: pass it as finetune(..., loss_fn=...)")
    if task_type == "span":
        start, end = outputs  # each (B, T)
        pad = batch.get("padding_mask")
        if pad is not None:  # padded tokens never win the softmax
            start = start.masked_fill(pad, torch.finfo(start.dtype).min)
            end = end.masked_fill(pad, torch.finfo(end.dtype).min)
        return 0.5 * (F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"]))
    raise ValueError(f"unknown task type {task_type!r}; use one of {TASK_TYPES}")


MODEL_INPUTS = ("input_ids", "padding_mask", "token_type_ids", "images", "waveform", "lengths")


def model_inputs(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The keys of a batch that the TaskModel consumes (the rest are targets and bookkeeping)."""
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS and v is not None}


__all__ = ["AudioClassificationHead", "CTCHead", "ImageClassificationHead",
           "QuestionAnsweringHead", "SequenceClassificationHead", "TaskModel",
           "model_inputs", "task_loss"]
