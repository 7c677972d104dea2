"""Masking schemes of data2vec v1 and its reference methods.

- `bert_mask`: BERT's masked-LM corruption (Devlin et al. 2019, section 3.1; data2vec paper arXiv
  2202.03555, section 4.2 "Natural language processing"): 15% of the eligible tokens are selected; of
  those 80% become `<mask>`, 10% a random token, 10% stay unchanged.
- `span_mask`: the variant of the released data2vec-text config (fairseq `examples/data2vec`,
  `mask_prob=0.35`, `mask_multiple_length=4`, no random/kept tokens): spans of 4 tokens, all `<mask>`.
- `block_mask` / `block_masks`: BEiT's block-wise masking (Bao et al. 2021, section 2.2, Algorithm 1;
  used unchanged by data2vec-vision): rectangles of random area and aspect ratio are added until the
  requested number of patches is reached; never more, possibly slightly fewer.
- `inverse_block_mask` (data2vec 2.0, arXiv 2212.07525, section 3 "Multi-mask training" / "inverse block
  masking"; released fairseq `compute_block_mask_2d(..., inverse_mask=True)`): the *kept* patches are grown
  as k x k blocks around random centres, then trimmed or filled at random to an exact kept count per row.
- `random_mask` (data2vec 2.0 text; MAE's `random_masking`, He et al. 2022, section 3): sort uniform noise
  and keep the first `int(T (1 - R))` tokens; the rest are masked, i.e. dropped from the student.
- `visible_index`: the gather indices of the tokens a visible-only student keeps.

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
- `inverse_block_mask` takes any rows x cols grid (fairseq assumes a square one) and fixes the count with one
  sort of random keys per row (kept cells first), not a loop of `torch.multinomial` calls; the result has the
  same law: an over-full kept set loses a uniformly random subset, an under-full one gains one.
- `random_mask(padding_mask=...)`: padded positions are never masked and never kept; each row keeps
  `max(1, int(n_b (1 - R)))` of its n_b real tokens, so rows of different lengths keep different counts
  (the student pads the gathered rows; see `visible_index`). fairseq's text pretraining has no padding.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "bert_mask", "span_mask", "block_mask", "block_masks", "special_tokens_mask", "inverse_block_mask", "random_mask",
    "visible_index",
]


def _check_ids_and_mask(input_ids: Tensor, special_mask: Tensor) -> None:
    if input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int, torch.int32, torch.int64):
        raise ValueError(f"input_ids must be an integer tensor (B, T), got {input_ids.dtype} {tuple(input_ids.shape)}")
    if special_mask.dtype != torch.bool or special_mask.shape != input_ids.shape:
        raise ValueError(
            f"special_mask must be bool (B, T) = {tuple(input_ids.shape)} with True = never select "
            f"(special tokens, padding), got {special_mask.dtype} {tuple(special_mask.shape)}; "
            f"build it with special_tokens_mask(input_ids, special_ids, padding_mask)"
        )


def special_tokens_mask(input_ids: Tensor, special_ids: Sequence[int] = (),
                        padding_mask: Tensor | None = None) -> Tensor:
    """bool (B, T), True where the token is one of `special_ids` or padding: positions never to select."""
    special = torch.isin(input_ids, torch.as_tensor(list(special_ids), dtype=input_ids.dtype, device=input_ids.device))
    return special if padding_mask is None else special | padding_mask


def _rand(shape, generator: torch.Generator | None, device) -> Tensor:
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _randint(high: int, shape, generator: torch.Generator | None, device) -> Tensor:
    if generator is None:
        return torch.randint(0, high, shape, device=device)
    return torch.randint(0, high, shape, generator=generator, device=generator.device).to(device)


def _keep_first(keys: Tensor, count: Tensor) -> Tensor:
    """bool (B, L): True at the `count[b]` positions of row b with the smallest keys."""
    B, L = keys.shape
    order = keys.argsort(dim=1)  # (B, L) positions sorted by key
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(L, device=keys.device).expand(B, L))  # (B, L)
    return rank < count[:, None]


def _select_exact_per_row(eligible: Tensor, rate: float, generator: torch.Generator | None) -> Tensor:
    """Select floor(rate * n_b + U) of the eligible positions of every row b uniformly at random.

    eligible: bool (B, T). Returns bool (B, T), a subset of `eligible`."""
    B, T = eligible.shape
    n = eligible.sum(dim=1)  # (B,) eligible count per row
    u = _rand((B,), generator, eligible.device)
    count = torch.floor(rate * n.float() + u).long().clamp(max=n)  # (B,) fairseq's probabilistic rounding
    keys = _rand((B, T), generator, eligible.device).masked_fill(~eligible, 2.0)  # ineligible positions sort last
    return _keep_first(keys, count) & eligible


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
        raise ValueError(f"mask_id={mask_id} is outside the vocabulary [0, {vocab_size}); "
                         f"pass the tokenizer's <mask> id")
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
    pick = torch.floor(_rand(input_ids.shape, generator, device) * len(allowed_ids)).long()
    pick = pick.clamp(max=len(allowed_ids) - 1)
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


# ---------------------------------------------------------------------------------------------------
# data2vec 2.0: inverse block masks (images), exact-ratio random masks (text), the visible-token gather
# ---------------------------------------------------------------------------------------------------


def _check_ratio(mask_ratio: float, fix: str) -> None:
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio}; {fix}")


def inverse_block_mask(
    batch_size: int,
    rows: int,
    cols: int,
    mask_ratio: float,
    *,
    block: int = 3,  # data2vec 2.0 released: mask_length = 3 (3 x 3 kept blocks on a 14 x 14 grid)
    adjust: float = 0.07,  # released: mask_prob_adjust = 0.07 (more centres, because blocks overlap)
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """data2vec 2.0 inverse block masks: bool (B, rows * cols), row-major, True = masked.

    With L = rows * cols and keep fraction p = 1 - mask_ratio:
    1. draw int(L (p + adjust) / block^2) centres per row uniformly with replacement;
    2. keep the block x block square around each centre (offsets -block//2 .. block - 1 - block//2,
       clamped at the border, so border blocks shrink and blocks may overlap);
    3. trim a uniformly random subset of the kept cells, or add uniformly random masked cells, until
       exactly int(L p) cells are kept in every row; the mask is the complement.
    ViT-B/16 at 224 px (14 x 14, R = 0.8): 5 centres, 39 kept, 157 masked in every row.
    """
    _check_ratio(mask_ratio, "data2vec 2.0 masks 0.8 of the patches")
    if rows < 1 or cols < 1:
        raise ValueError(f"inverse_block_mask needs a positive grid, got {rows} x {cols}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}; data2vec 2.0 uses 3 (2 suits an 8 x 8 grid)")
    if block > min(rows, cols):
        raise ValueError(f"a {block} x {block} block does not fit the {rows} x {cols} patch grid; "
                         f"use block <= {min(rows, cols)} (e.g. 2 for grids of 8 x 8 or smaller)")
    if adjust < 0:
        raise ValueError(f"adjust must be >= 0, got {adjust}; data2vec 2.0 uses 0.07")
    L = rows * cols
    keep = int(L * (1 - mask_ratio))  # the released count: 39 of 196 at R = 0.8
    if keep < 1:
        raise ValueError(f"mask_ratio={mask_ratio} keeps no patch of a {rows} x {cols} grid; lower the ratio "
                         f"to at most {1 - 1 / L:.3f} or use a finer patch grid")
    num_centres = int(L * ((1 - mask_ratio) + adjust) / block**2)
    device = torch.device("cpu") if device is None else torch.device(device)
    kept = torch.zeros(batch_size, rows, cols, dtype=torch.bool, device=device)  # (B, rows, cols)
    if num_centres > 0:
        centres = _randint(L, (batch_size, num_centres), generator, device)  # (B, C) with replacement
        centre_row, centre_col = centres // cols, centres % cols  # (B, C) each
        sample = torch.arange(batch_size, device=device)[:, None].expand_as(centres)  # (B, C)
        offsets = range(-(block // 2), block - block // 2)  # k = 3: -1, 0, 1 (centred); k = 2: -1, 0
        for di in offsets:
            for dj in offsets:
                r = (centre_row + di).clamp(0, rows - 1)
                c = (centre_col + dj).clamp(0, cols - 1)
                kept[sample, r, c] = True
    kept = kept.reshape(batch_size, L)  # (B, L) row-major
    # Exact count: kept cells get keys in [0, 1), the others [1, 2); the `keep` smallest keys stay kept.
    # Too many kept -> a uniform subset of them survives; too few -> all survive plus uniform extra cells.
    keys = _rand((batch_size, L), generator, device) + (~kept).to(torch.float32)  # (B, L)
    final_kept = _keep_first(keys, torch.full((batch_size,), keep, device=device))
    return ~final_kept


def random_mask(
    batch_size: int,
    length: int,
    mask_ratio: float,
    *,
    padding_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Exact-ratio random masks: bool (B, length), True = masked (MAE's random_masking, data2vec 2.0 text).

    Without padding every row keeps exactly int(length (1 - R)) uniformly placed tokens and masks the rest.
    padding_mask: bool (B, length), True = pad. Then pads are never masked (and never kept: the student
    drops them too), and row b keeps max(1, int(n_b (1 - R))) of its n_b real tokens, uniformly placed,
    masking the others; a row without real tokens masks nothing."""
    _check_ratio(mask_ratio, "data2vec 2.0 text masks 0.48 of the tokens")
    if length < 1:
        raise ValueError(f"random_mask needs length >= 1, got {length}")
    device = torch.device("cpu") if device is None else torch.device(device)
    noise = _rand((batch_size, length), generator, device)  # (B, T) uniform: sort and keep the first
    if padding_mask is None:
        keep = int(length * (1 - mask_ratio))
        if keep < 1:
            raise ValueError(f"mask_ratio={mask_ratio} keeps no token of a sequence of {length}; lower the ratio "
                             f"or use longer sequences")
        return ~_keep_first(noise, torch.full((batch_size,), keep, device=device))
    if padding_mask.dtype != torch.bool or tuple(padding_mask.shape) != (batch_size, length):
        raise ValueError(f"padding_mask must be bool (B, T) = {(batch_size, length)} with True = pad, "
                         f"got {padding_mask.dtype} {tuple(padding_mask.shape)}")
    padding_mask = padding_mask.to(device)
    real = (~padding_mask).sum(dim=1)  # (B,) n_b
    keep = torch.floor(real.double() * (1 - mask_ratio)).long().clamp(min=1)  # (B,) int(n_b (1 - R)), >= 1
    kept = _keep_first(noise.masked_fill(padding_mask, 2.0), keep)  # pads sort last, never kept
    return ~kept & ~padding_mask


def visible_index(visible: Tensor) -> tuple[Tensor, Tensor | None]:
    """Gather indices of the tokens a visible-only student keeps.

    visible: bool (B, T), True = the token enters the student. Returns (index long (B, K), padding bool
    (B, K) True = filler slot, or None when every row keeps the same count) with K = the largest kept count:
    row b lists its visible positions in ascending order, then filler positions marked as padding.
    Syncs with the device once (K is a shape)."""
    if visible.dtype != torch.bool or visible.dim() != 2:
        raise ValueError(f"visible must be bool (B, T) with True = enters the student, got {visible.dtype} "
                         f"{tuple(visible.shape)}")
    count = visible.sum(dim=1)  # (B,) kept per row
    order = torch.sort((~visible).to(torch.uint8), dim=1, stable=True).indices  # (B, T) visible first, in order
    K = int(count.max())
    index = order[:, :K]  # (B, K)
    padding = torch.arange(K, device=visible.device)[None, :] >= count[:, None]  # (B, K) True = filler
    return index, (padding if bool(padding.any()) else None)
