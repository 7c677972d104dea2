"""The model's outputs over a loader, per task type, for scoring: `predict` (used by the fine-tuning loop's
evaluation and by every scorer that reads a fine-tuned model: GLUE, SQuAD, images, keywords, CTC).

Padding never reaches a score: span logits and CTC frame logits are trimmed to each example's real length.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from .devices import to_device
from .heads import model_inputs


@torch.no_grad()
def predict(model: nn.Module, loader: Sequence | DataLoader, task_type: str, device="cpu", bf16: bool = False):
    """Run the model over `loader` in eval mode.

    Returns (outputs, labels):
      classification: logits (N, C) float array, labels (N,)
      regression:     predictions (N,), labels (N,)
      span:           a list of (start_logits (T_i,), end_logits (T_i,)) per feature, trimmed to its real
                      length; labels None.
      ctc:            a list of frame logits (T_i, V) per utterance, trimmed to its real frames; labels the list
                      of transcripts.
    bf16: the forward pass under bf16 autocast (the outputs come back as float32).
    """
    was_training = model.training
    model.eval()
    outs: list = []
    labels: list = []
    try:
        for batch in loader:
            batch = to_device(batch, device)
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
                out = model(**model_inputs(batch))
            if task_type == "ctc":
                logits, padding = out  # (B, T, V), (B, T) True = pad or None
                frames = [logits.shape[1]] * len(logits) if padding is None else (~padding).sum(1).tolist()
                outs += [logits[i, :n].float().cpu().numpy() for i, n in enumerate(frames)]
                labels += list(batch["transcripts"])
            elif task_type == "span":
                start, end = out  # (B, T) each
                if "padding_mask" in batch:
                    lengths = (~batch["padding_mask"]).sum(1).tolist()  # real tokens per example
                else:
                    lengths = [start.shape[1]] * len(start)
                for i, n in enumerate(lengths):
                    outs.append((start[i, :n].float().cpu().numpy(), end[i, :n].float().cpu().numpy()))
            else:
                outs.append(out.float().cpu())
                if "labels" in batch:
                    labels.append(batch["labels"].cpu())
    finally:
        model.train(was_training)
    if task_type == "span":
        return outs, None
    if task_type == "ctc":
        return outs, labels
    logits = torch.cat(outs).numpy()
    if task_type == "regression":
        logits = logits.reshape(-1)
    return logits, (torch.cat(labels).numpy() if labels else None)
