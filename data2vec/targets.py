"""data2vec targets: normalise the top-K teacher layers, average them, optionally normalise again.

data2vec (arXiv 2202.03555, section 3.3 "Targets"):

    Eq. (targets): y_t = 1/K * sum_{l = L-K+1}^{L} norm(a_t^l),

where a_t^l is the output of block l at time step t (text: the FFN output before the last residual,
`"ffn"`; vision: the block output, `"block"`) and norm() has no learned parameters: layer norm over the
feature dimension (text and vision in the paper) or instance norm over the time steps of each sample and
channel (speech). The released vision code adds a layer norm after averaging (`final_norm="layer"`).

Padding never influences a target: instance norm statistics use the non-padded tokens only, and the
targets at padded positions are set to zero (they never enter a loss).

Differences from the original: none in the equations; everything is computed in fp32 (as fairseq does
with `.float()`), eps = 1e-5 as in `F.layer_norm` / `F.instance_norm`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["build_targets", "instance_norm", "TARGET_NORMS"]

TARGET_NORMS = ("layer", "instance", "none")
EPS = 1e-5  # F.layer_norm / F.instance_norm default (fairseq)


def instance_norm(x: Tensor, padding_mask: Tensor | None = None, eps: float = EPS) -> Tensor:
    """Normalise x (B, T, D) over T for every sample and channel, counting only non-padded tokens.

    y_btd = (x_btd - mu_bd) / sqrt(var_bd + eps), mu/var (biased) over the real tokens t of sample b."""
    if padding_mask is None:
        valid = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)  # (B, T) 1 = real token
    else:
        valid = (~padding_mask).to(x.dtype)  # (B, T) 1 = real token
    valid = valid[..., None]  # (B, T, 1)
    count = valid.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1, 1) real tokens per sample
    mean = (x * valid).sum(dim=1, keepdim=True) / count  # (B, 1, D)
    var = ((x - mean) ** 2 * valid).sum(dim=1, keepdim=True) / count  # (B, 1, D)
    return (x - mean) / torch.sqrt(var + eps)


def _normalise(x: Tensor, kind: str, padding_mask: Tensor | None) -> Tensor:
    if kind == "layer":
        return F.layer_norm(x, x.shape[-1:], eps=EPS)  # over D, per token, no affine
    if kind == "instance":
        return instance_norm(x, padding_mask)
    return x


def build_targets(
    layer_outputs: Sequence[Tensor],
    top_k: int,
    *,
    layer_norm: str = "layer",
    final_norm: str = "none",
    padding_mask: Tensor | None = None,
) -> Tensor:
    """Targets (B, T, D) from the per-block tensors (first block first): Eq. (targets) over the last `top_k`.

    layer_norm: norm applied to each of the K layers ("layer", "instance" or "none");
    final_norm: norm applied after averaging (same choices; vision uses "layer");
    padding_mask: bool (B, T), True = padding; ignored by instance norm, zero in the output.
    """
    layers = list(layer_outputs)
    if not 1 <= top_k <= len(layers):
        raise ValueError(f"top_k={top_k} must lie in [1, {len(layers)}] (the number of blocks); "
                         f"the paper averages the top 10 of 12 (text) or 6 of 12 (vision)")
    for name, kind in (("layer_norm", layer_norm), ("final_norm", final_norm)):
        if kind not in TARGET_NORMS:
            raise ValueError(f"{name} must be one of {TARGET_NORMS}, got {kind!r}")
    shape = layers[0].shape
    if len(shape) != 3 or any(x.shape != shape for x in layers):
        raise ValueError(f"layer_outputs must all be (B, T, D) of one shape, got {[tuple(x.shape) for x in layers]}")
    if padding_mask is not None and (padding_mask.dtype != torch.bool or padding_mask.shape != shape[:2]):
        raise ValueError(f"padding_mask must be bool (B, T) = {tuple(shape[:2])} with True = padding")
    top = layers[-top_k:]  # K tensors (B, T, D)
    # Eq. (targets): y = 1/K sum_l norm(a^l)
    y = sum(_normalise(x.float(), layer_norm, padding_mask) for x in top) / top_k  # (B, T, D)
    y = _normalise(y, final_norm, padding_mask)
    if padding_mask is not None:
        y = y.masked_fill(padding_mask[..., None], 0.0)
    return y
