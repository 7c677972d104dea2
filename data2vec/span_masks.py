"""Time masks in spans for speech: fairseq's `compute_mask_indices` (wav2vec 2.0, Baevski et al. 2020, section 3.1;
data2vec arXiv 2202.03555, section 4.3 and data2vec 2.0 arXiv 2212.07525, section 4 "Speech").

For each row b with n_b real frames (padding excluded):

    num_spans_b = max(min_spans, int(p * n_b / L + u_b)),   u_b ~ U[0, 1)   (probabilistic rounding)
    starts: num_spans_b distinct values drawn uniformly from {0, ..., n_b - L - 1}
            (from {0, ..., num_spans_b} when n_b - L <= num_spans_b, as fairseq shrinks the span there)
    masked: the union of [s, s + L) over the starts, clipped to the real frames

Spans may overlap, so the masked fraction is below p (about 0.49 for p = 0.65, L = 10). With `same_count`
(fairseq `require_same_masks`, on in every released audio config) every row is then trimmed, by a uniformly
random subset of its masked frames, to the smallest masked count of the batch, so every row masks the same
number of frames. data2vec v1 audio: p = 0.65, L = 10 (`mask_prob`, `mask_length`); data2vec 2.0 audio: p = 0.5,
L = 5 (its `mask_prob_adjust` = 0.05 is read by fairseq's image masks only; the audio path never uses it).

Differences from the original: the random numbers come from torch (an optional `torch.Generator`, else the
global RNG seeded by the engine) instead of numpy generators seeded per sample id; no `mask_dropout` or
`add_masks` (both off in the released configs). The masks are bool, True = masked.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["span_time_mask"]


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator)) if generator is not None else float(torch.rand(()))


def _perm(n: int, generator: torch.Generator | None) -> Tensor:
    return torch.randperm(n, generator=generator) if generator is not None else torch.randperm(n)


def _row_spans(n: int, mask_prob: float, span: int, min_spans: int, generator: torch.Generator | None) -> Tensor:
    """The masked frames (sorted, unique, long) of one row with n real frames."""
    num = max(min_spans, int(mask_prob * n / span + _uniform(generator)))
    shrink = span
    if n - shrink <= num:  # fairseq: too short for num spans of this length -> fewer start positions
        shrink = n - num - 1
    if n - shrink < num or n - shrink < 1:
        raise ValueError(f"a row of {n} real frames cannot hold {num} spans of {span} frames; use longer audio "
                         "or a smaller mask_prob / mask length")
    starts = _perm(n - shrink, generator)[:num]  # num distinct starts in {0, ..., n - shrink - 1}
    frames = (starts[:, None] + torch.arange(span)[None, :]).flatten()  # (num * span,)
    return torch.unique(frames[frames < n])


def span_time_mask(batch_size: int, num_frames: int, mask_prob: float, span: int, *,
                   padding_mask: Tensor | None = None, min_spans: int = 1, same_count: bool = True,
                   generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
    """bool (B, T), True = masked frame; padding (bool (B, T), True = pad, right-padded) is never masked."""
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob must lie in (0, 1), got {mask_prob}; data2vec audio uses 0.65 (v1) or 0.5 (v2)")
    if span < 1:
        raise ValueError(f"the span length must be >= 1, got {span}; data2vec audio uses 10 (v1) or 5 (v2)")
    if padding_mask is not None and (padding_mask.dtype != torch.bool or
                                     tuple(padding_mask.shape) != (batch_size, num_frames)):
        raise ValueError(f"padding_mask must be bool (B, T) = {(batch_size, num_frames)} with True = pad, "
                         f"got {padding_mask.dtype} {tuple(padding_mask.shape)}")
    if generator is not None and generator.device.type != "cpu":
        raise ValueError("span_time_mask draws on the CPU; pass a CPU generator (the mask is moved to `device`)")
    real = [num_frames] * batch_size if padding_mask is None else (~padding_mask).sum(dim=1).tolist()
    rows = [_row_spans(int(n), mask_prob, span, min_spans, generator) for n in real]
    if same_count:  # fairseq require_same_masks: trim each row to the smallest count, a uniform random subset
        target = min(len(r) for r in rows)
        rows = [r if len(r) == target else r[_perm(len(r), generator)[:target]] for r in rows]
    mask = torch.zeros(batch_size, num_frames, dtype=torch.bool)
    for b, frames in enumerate(rows):
        mask[b, frames] = True
    return mask.to(device) if device is not None else mask
