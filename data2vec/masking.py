"""Masking schemes of data2vec v1 and its reference methods.

- `bert_mask`: BERT's masked-LM corruption (Devlin et al. 2019, section 3.1; data2vec paper arXiv
  2202.03555, section 4.2 "Natural language processing"): 15% of the eligible tokens are selected; of
  those 80% become `<mask>`, 10% a random token, 10% stay unchanged.
- `span_mask`: the variant of the released data2vec-text config (fairseq `examples/data2vec`,
  `mask_prob=0.35`, `mask_multiple_length=4`, no random/kept tokens): spans of 4 tokens, all `<mask>`.
- `block_mask` / `block_masks`: BEiT's block-wise masking (Bao et al. 2021, section 2.2, Algorithm 1;
  used unchanged by data2vec-vision): rectangles of random area and aspect ratio are added until the
  requested number of patches is reached; never more, possibly slightly fewer.

Every random function takes an optional `torch.Generator`; without one it uses the global torch RNG, so
the engine's seeding and RNG checkpoints fix the masks. Masks are bool and True means "masked/selected".

Differences from the originals:
- `bert_mask` selects an exact count per sequence, `floor(p * n_eligible + U)` with U ~ U[0, 1)
  (fairseq's MaskTokensDataset rounding; expected fraction exactly p), instead of BERT's
  per-token Bernoulli draws or its fixed `max_predictions_per_seq`.
- `span_mask`: overlapping spans merge (as in fairseq), so the masked fraction is a little below p.
- `block_mask`: every rectangle has an area of at least `min_block` cells, so every masked region
  holds at least `min_block` cells. BEiT's rounding of h, w (and its last, smaller block) can make a
  rectangle slightly smaller; here such a try is rejected, so the count may fall short by a few cells.
  The random numbers come from a Python `random.Random` seeded from the torch generator (fast and
  reproducible), not from Python's global RNG as in BEiT.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["bert_mask", "span_mask", "block_mask", "block_masks", "special_tokens_mask"]


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------


def _check_ids_and_mask(input_ids: Tensor, special_mask: Tensor) -> None:
    if input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int, torch.int32, torch.int64):
        raise ValueError(f"input_ids must be an integer tensor (B, T), got {input_ids.dtype} {tuple(input_ids.shape)}")
    if special_mask.dtype != torch.bool or special_mask.shape != input_ids.shape:
        raise ValueError(
            f"special_mask must be bool (B, T) = {tuple(input_ids.shape)} with True = never select "
            f"(special tokens, padding), got {special_mask.dtype} {tuple(special_mask.shape)}; "
            f"build it with special_tokens_mask(input_ids, special_ids, padding_mask)"
        )


def special_tokens_mask(input_ids: Tensor, special_ids: Sequence[int] = (), padding_mask: Tensor | None = None) -> Tensor:
    """bool (B, T), True where the token is one of `special_ids` or padding: positions never to select."""
    special = torch.isin(input_ids, torch.as_tensor(list(special_ids), dtype=input_ids.dtype, device=input_ids.device))
    return special if padding_mask is None else special | padding_mask


def _select_exact_per_row(eligible: Tensor, rate: float, generator: torch.Generator | None) -> Tensor:
    """Select floor(rate * n_b + U) of the eligible positions of every row b uniformly at random.

    eligible: bool (B, T). Returns bool (B, T), a subset of `eligible`."""
    B, T = eligible.shape
    device = eligible.device
    n = eligible.sum(dim=1)  # (B,) eligible count per row
    u = torch.rand(B, generator=generator, device=device if generator is None else generator.device).to(device)
    count = torch.floor(rate * n.float() + u).long().clamp(max=n)  # (B,) fairseq's probabilistic rounding
    keys = torch.rand(B, T, generator=generator, device=device if generator is None else generator.device).to(device)
    keys = keys.masked_fill(~eligible, 2.0)  # ineligible positions sort last
    order = keys.argsort(dim=1)  # (B, T) positions sorted by their random key
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(T, device=device).expand(B, T))  # (B, T)
    return (rank < count[:, None]) & eligible


def _rand(shape, generator: torch.Generator | None, device) -> Tensor:
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


# ---------------------------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------------------------


def bert_mask(
    input_ids: Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    special_mask: Tensor,
    mask_prob: float = 0.15,  # BERT / data2vec paper: 15% of the tokens
    random_prob: float = 0.1,  # BERT: 10% of the selected tokens become a random token
    keep_prob: float = 0.1,  # BERT: 10% of the selected tokens stay unchanged
    special_ids: Sequence[int] = (),
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT 80/10/10 corruption.

    input_ids: long (B, T). special_mask: bool (B, T), True = never select (special tokens, padding).
    Random replacements are drawn uniformly from [0, vocab_size) minus `special_ids` (pass the mask,
    pad, bos/eos/cls/sep and unk ids there). Returns (corrupted_ids (B, T), mask bool (B, T) True = selected).
    """
    _check_ids_and_mask(input_ids, special_mask)
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must lie in [0, 1], got {mask_prob}; BERT uses 0.15")
    if random_prob < 0 or keep_prob < 0 or random_prob + keep_prob > 1.0:
        raise ValueError(f"random_prob={random_prob} and keep_prob={keep_prob} must be >= 0 and sum to at most 1; "
                         f"BERT uses 0.1 and 0.1")
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id={mask_id} is outside the vocabulary [0, {vocab_size}); pass the tokenizer's <mask> id")
    device = input_ids.device
    mask = _select_exact_per_row(~special_mask, mask_prob, generator)  # (B, T)
    # Of the selected tokens: u < 1 - r - k -> <mask>; next r -> random token; last k -> unchanged.
    u = _rand(input_ids.shape, generator, device)  # (B, T)
    to_mask = mask & (u < 1.0 - random_prob - keep_prob)
    to_random = mask & (u >= 1.0 - random_prob - keep_prob) & (u < 1.0 - keep_prob)
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    special = [i for i in special_ids if 0 <= i < vocab_size]
    allowed[special] = False
    allowed_ids = allowed.nonzero().squeeze(1).to(device)  # (V',) ids a random replacement may take
    if len(allowed_ids) == 0:
        raise ValueError("special_ids cover the whole vocabulary; no id is left for random replacement")
    pick = torch.floor(_rand(input_ids.shape, generator, device) * len(allowed_ids)).long().clamp(max=len(allowed_ids) - 1)
    random_ids = allowed_ids[pick].to(input_ids.dtype)  # (B, T) uniform over the allowed ids
    corrupted = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    corrupted = torch.where(to_random, random_ids, corrupted)
    return corrupted, mask


def span_mask(
    input_ids: Tensor,
    *,
    mask_id: int,
    special_mask: Tensor,
    mask_prob: float = 0.35,  # released data2vec-text config (fairseq examples/data2vec)
    span: int = 4,  # released config: mask_multiple_length = 4
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Span masking of the released data2vec-text code: floor(p * n / span + U) span starts are drawn
    among the eligible tokens of each sequence, each start masks itself and the next span - 1 tokens
    (eligible ones only); every masked token becomes `<mask>`.

    Returns (corrupted_ids (B, T), mask bool (B, T) True = masked)."""
    _check_ids_and_mask(input_ids, special_mask)
    if span < 1:
        raise ValueError(f"span must be >= 1, got {span}; the released config uses 4")
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must lie in [0, 1], got {mask_prob}; the released config uses 0.35")
    eligible = ~special_mask
    starts = _select_exact_per_row(eligible, mask_prob / span, generator)  # (B, T)
    mask = starts.clone()
    for offset in range(1, span):  # grow every start to the right by span - 1 tokens
        mask[:, offset:] |= starts[:, :-offset]
    mask &= eligible
    corrupted = torch.where(mask, torch.full_like(input_ids, mask_id), input_ids)
    return corrupted, mask


# ---------------------------------------------------------------------------------------------------
# vision: BEiT block-wise masking
# ---------------------------------------------------------------------------------------------------


def _torch_seed(generator: torch.Generator | None) -> int:
    if generator is None:
        return int(torch.randint(0, 2**62, (1,)).item())
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())


def _block_mask_with(rng: random.Random, height: int, width: int, num_masked: int, min_block: int,
                     max_block: int, log_aspect: tuple[float, float]) -> Tensor:
    """BEiT Algorithm 1 on a (height, width) grid with a given Python RNG."""
    mask = [[False] * width for _ in range(height)]
    count = 0
    while count < num_masked:
        budget = min(num_masked - count, max_block)  # cells this block may add
        added = 0
        for _attempt in range(10):  # BEiT: up to 10 tries per block
            # s ~ U[min_block, budget]; r ~ logU[aspect]; h = round(sqrt(s r)), w = round(sqrt(s / r))
            area = rng.uniform(min_block, max(budget, min_block))
            aspect = math.exp(rng.uniform(*log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if not (w < width and h < height) or h * w < min_block:
                continue
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            new = sum(not mask[i][j] for i in range(top, top + h) for j in range(left, left + w))
            if 0 < new <= budget:  # never exceed the requested count
                for i in range(top, top + h):
                    for j in range(left, left + w):
                        mask[i][j] = True
                added = new
                break
        if added == 0:
            break  # 10 failed tries: stop slightly short of num_masked
        count += added
    return torch.tensor(mask, dtype=torch.bool)


def _check_block_args(height: int, width: int, num_masked: int, min_block: int, max_block: int | None,
                      aspect: tuple[float, float]) -> tuple[int, tuple[float, float]]:
    if height < 1 or width < 1:
        raise ValueError(f"block_mask needs a positive grid, got {height} x {width}")
    if not 0 <= num_masked <= height * width:
        raise ValueError(f"num_masked={num_masked} must lie in [0, {height * width}] for a {height} x {width} grid")
    if min_block < 1:
        raise ValueError(f"min_block must be >= 1, got {min_block}; BEiT uses 16 of 196 cells (about 8% of the grid)")
    max_block = num_masked if max_block is None else max_block
    if max_block < min_block and num_masked > 0:
        raise ValueError(f"max_block={max_block} is below min_block={min_block}; raise max_block or leave it None")
    lo, hi = aspect
    if not 0 < lo <= hi:
        raise ValueError(f"aspect must be (low, high) with 0 < low <= high, got {aspect}; BEiT uses (0.3, 1/0.3)")
    return max_block, (math.log(lo), math.log(hi))


def block_mask(
    height: int,
    width: int,
    num_masked: int,
    *,
    min_block: int = 16,  # BEiT: min_num_patches = 16 (of a 14 x 14 grid)
    max_block: int | None = None,  # BEiT: None = no limit besides num_masked
    aspect: tuple[float, float] = (0.3, 1 / 0.3),  # BEiT: aspect ratio log-uniform in [0.3, 1/0.3]
    generator: torch.Generator | None = None,
) -> Tensor:
    """One BEiT block-wise mask: bool (height, width), True = masked; at most `num_masked` cells."""
    max_block, log_aspect = _check_block_args(height, width, num_masked, min_block, max_block, aspect)
    rng = random.Random(_torch_seed(generator))
    return _block_mask_with(rng, height, width, num_masked, min_block, max_block, log_aspect)


def block_masks(
    batch_size: int,
    height: int,
    width: int,
    num_masked: int,
    *,
    min_block: int = 16,
    max_block: int | None = None,
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
    generator: torch.Generator | None = None,
) -> Tensor:
    """A batch of independent block-wise masks: bool (B, height, width)."""
    max_block, log_aspect = _check_block_args(height, width, num_masked, min_block, max_block, aspect)
    rng = random.Random(_torch_seed(generator))
    return torch.stack([_block_mask_with(rng, height, width, num_masked, min_block, max_block, log_aspect)
                        for _ in range(batch_size)])  # (B, height, width)
