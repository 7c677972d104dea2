"""The optimiser of every training loop: AdamW parameter groups without weight decay where it hurts, and
BEiT's layer-wise learning-rate decay.

- `param_groups`: AdamW (Loshchilov & Hutter 2019) without weight decay on 1-D parameters (biases, norms,
  layer-scale gammas), position tables and CLS/mask tokens (BERT, BEiT, data2vec-vision), optionally with
  BEiT's layer-wise lr decay `scale_i = decay ** (depth + 1 - i)` (BEiT arXiv 2106.08254 appendix;
  data2vec-vision fine-tuning uses 0.65).
- `build_optimizer`: AdamW over those groups; frozen tensors (EMA teachers) are left out.

Differences from the original: BEiT lists the no-decay names per model (`no_weight_decay()`); here one name
table covers every model of the project.
"""

from __future__ import annotations

import re

import torch
from torch import nn

__all__ = ["NO_DECAY_NAMES", "build_optimizer", "param_groups"]

# Parameters that never get weight decay besides every tensor with <= 1 dimension (BEiT's `no_weight_decay`
# set: pos_embed, cls_token, mask_token, relative position tables; plus our position table names).
NO_DECAY_NAMES = ("cls_token", "mask_token", "pos_embed", "positions", "rel_pos", "relative_position", "gamma")


# ---- optimiser ------------------------------------------------------------------------------------
def _layer_id(name: str, depth: int) -> int:
    """BEiT layer ids: embeddings/tokens 0, block i -> i + 1, everything else (heads, shared bias) depth + 1."""
    block = re.search(r"(?:^|\.)blocks\.(\d+)\.", name)
    if block:
        return int(block.group(1)) + 1
    per_block_bias = re.search(r"(?:^|\.)rel_pos\.(\d+)\.", name)  # one relative bias per block
    if per_block_bias:
        return int(per_block_bias.group(1)) + 1
    if re.search(r"(?:^|\.)(embed|cls_token|mask_token|pos_embed)(?:\.|$)", name):
        return 0
    return depth + 1


def param_groups(model: nn.Module, weight_decay: float, *, layer_decay: float | None = None,
                 base_lr: float | None = None, no_decay_names: tuple[str, ...] = NO_DECAY_NAMES) -> list[dict]:
    """AdamW groups over the trainable parameters: {"params", "weight_decay", "lr_scale", "group_name"[, "lr"]}.

    No decay on 1-D tensors and on names containing any of `no_decay_names`. With `layer_decay`, the lr of
    block i is scaled by layer_decay ** (depth + 1 - (i + 1)); embeddings get the smallest scale, heads 1.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    block_ids = {int(m.group(1)) for n, _ in named for m in [re.search(r"(?:^|\.)blocks\.(\d+)\.", n)] if m}
    depth = max(block_ids) + 1 if block_ids else 0
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in named:
        decay = not (p.ndim <= 1 or any(key in name for key in no_decay_names))
        layer = _layer_id(name, depth) if layer_decay is not None else depth + 1
        scale = layer_decay ** (depth + 1 - layer) if layer_decay is not None else 1.0
        key = (layer, decay)
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale,
                           "group_name": f"layer{layer}_{'decay' if decay else 'no_decay'}"}
            if base_lr is not None:
                groups[key]["lr"] = base_lr * scale
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.98), eps: float = 1e-6,
                    layer_decay: float | None = None) -> torch.optim.AdamW:
    """AdamW over the parameters with requires_grad=True (teachers are excluded), grouped by `param_groups`."""
    groups = param_groups(model, weight_decay, layer_decay=layer_decay, base_lr=lr)
    if not groups:
        raise ValueError("the model has no trainable parameters (all requires_grad=False); fix: unfreeze the student")
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)
