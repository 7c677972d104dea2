"""Seeded statistical tests of the masking schemes (docs/design.md section 4, masking row)."""

import math

import pytest
import torch

from data2vec.masking import bert_mask, block_mask, block_masks, span_mask, special_tokens_mask

VOCAB, MASK_ID, PAD_ID, BOS, EOS = 120, 3, 1, 0, 2
SPECIAL = (BOS, PAD_ID, EOS, MASK_ID)


def text_batch(B=600, T=48, seed=0):
    """Random ids from the non-special range, <s> first, </s> last real token, random padded tails."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (B, T), generator=g)
    lengths = torch.randint(8, T + 1, (B,), generator=g)
    pos = torch.arange(T)[None, :]
    padding = pos >= lengths[:, None]
    ids[:, 0] = BOS
    ids[torch.arange(B), lengths - 1] = EOS
    ids[padding] = PAD_ID
    return ids, padding


def components(mask):
    """Sizes of the 4-connected regions of a 2-D bool mask (flood fill, written here)."""
    H, W = mask.shape
    seen = torch.zeros_like(mask)
    sizes = []
    for i in range(H):
        for j in range(W):
            if mask[i, j] and not seen[i, j]:
                stack, size = [(i, j)], 0
                seen[i, j] = True
                while stack:
                    a, b = stack.pop()
                    size += 1
                    for da, db in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                        x, y = a + da, b + db
                        if 0 <= x < H and 0 <= y < W and mask[x, y] and not seen[x, y]:
                            seen[x, y] = True
                            stack.append((x, y))
                sizes.append(size)
    return sizes


# --------------------------------------------------------------------------------------------------
# BERT 80/10/10
# --------------------------------------------------------------------------------------------------


def test_special_tokens_mask_marks_special_ids_and_padding():
    ids, padding = text_batch(B=5, T=12)
    special = special_tokens_mask(ids, SPECIAL, padding)
    expected = torch.tensor([[int(t) in SPECIAL for t in row] for row in ids]) | padding
    assert torch.equal(special, expected)


def test_bert_mask_statistics_over_seeded_draws():
    ids, padding = text_batch()
    special = special_tokens_mask(ids, SPECIAL, padding)
    eligible = (~special).sum().item()
    selected = masked = randomised = kept = 0
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        corrupted, mask = bert_mask(ids, mask_id=MASK_ID, vocab_size=VOCAB, special_mask=special,
                                    special_ids=SPECIAL, generator=g)
        assert mask.dtype == torch.bool and mask.shape == ids.shape
        # special and padded positions are never selected and never changed
        assert not (mask & special).any()
        assert torch.equal(corrupted[~mask], ids[~mask])
        sel = corrupted[mask]
        orig = ids[mask]
        selected += mask.sum().item()
        masked += (sel == MASK_ID).sum().item()
        # random replacements are never special ids
        changed = (sel != MASK_ID) & (sel != orig)
        assert not torch.isin(sel[changed], torch.tensor(SPECIAL)).any()
        assert (sel[changed] >= 0).all() and (sel[changed] < VOCAB).all()
        randomised += changed.sum().item()
        kept += (sel == orig).sum().item()
    total = 5 * eligible
    frac = selected / total
    assert abs(frac - 0.15) < 0.005, frac
    # 80 / 10 / 10 of the selected ones; a random draw equals the original id with prob 1/116
    p_same = 1 / (VOCAB - len(SPECIAL))
    sd = math.sqrt(0.1 * 0.9 / selected)
    assert abs(masked / selected - 0.8) < 5 * sd * 1.4
    assert abs(randomised / selected - 0.1 * (1 - p_same)) < 5 * sd
    assert abs(kept / selected - (0.1 + 0.1 * p_same)) < 5 * sd


def test_bert_mask_random_ids_are_uniform_over_non_special_ids():
    ids, padding = text_batch(B=2000, T=48, seed=3)
    special = special_tokens_mask(ids, SPECIAL, padding)
    corrupted, mask = bert_mask(ids, mask_id=MASK_ID, vocab_size=VOCAB, special_mask=special, special_ids=SPECIAL,
                                random_prob=1.0, keep_prob=0.0, generator=torch.Generator().manual_seed(0))
    draws = corrupted[mask]
    counts = torch.bincount(draws, minlength=VOCAB).float()
    assert counts[list(SPECIAL)].sum() == 0
    allowed = counts[4:]
    expected = draws.numel() / allowed.numel()
    chi2 = ((allowed - expected) ** 2 / expected).sum().item()
    dof = allowed.numel() - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof), chi2


def test_bert_mask_same_seed_same_result_and_rows_get_exact_counts():
    ids, padding = text_batch(B=50)
    special = special_tokens_mask(ids, SPECIAL, padding)
    a = bert_mask(ids, mask_id=MASK_ID, vocab_size=VOCAB, special_mask=special,
                  generator=torch.Generator().manual_seed(7))
    b = bert_mask(ids, mask_id=MASK_ID, vocab_size=VOCAB, special_mask=special,
                  generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    n = (~special).sum(1).float()
    count = a[1].sum(1).float()
    assert ((count - 0.15 * n).abs() < 1.0).all()  # floor(p n + U) is within one of p n


def test_bert_mask_rejects_bad_input():
    ids, padding = text_batch(B=2)
    with pytest.raises(ValueError, match="special_mask"):
        bert_mask(ids, mask_id=MASK_ID, vocab_size=VOCAB, special_mask=padding.long())
    with pytest.raises(ValueError, match="mask_id"):
        bert_mask(ids, mask_id=VOCAB, vocab_size=VOCAB, special_mask=padding)


def test_span_mask_spans_of_four_all_mask_token():
    ids, padding = text_batch(B=800, seed=5)
    special = special_tokens_mask(ids, SPECIAL, padding)
    corrupted, mask = span_mask(ids, mask_id=MASK_ID, special_mask=special, generator=torch.Generator().manual_seed(0))
    assert not (mask & special).any()
    assert (corrupted[mask] == MASK_ID).all() and torch.equal(corrupted[~mask], ids[~mask])
    frac = mask.sum().item() / (~special).sum().item()
    assert 0.25 < frac <= 0.35, frac  # overlapping spans merge, so slightly below 0.35
    # runs of masked tokens: most have length >= 4 (only the end of a sequence truncates them)
    runs = []
    for row in mask.tolist():
        length = 0
        for m in row + [False]:
            if m:
                length += 1
            elif length:
                runs.append(length)
                length = 0
    assert sum(r >= 4 for r in runs) / len(runs) > 0.85


# --------------------------------------------------------------------------------------------------
# BEiT block masking
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid,num,min_block", [((14, 14), 120, 16), ((8, 8), 38, 5), ((6, 10), 30, 4)])
def test_block_mask_count_blocks_and_seed(grid, num, min_block):
    H, W = grid
    masks = block_masks(300, H, W, num, min_block=min_block, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (300, H, W) and masks.dtype == torch.bool
    counts = masks.flatten(1).sum(1).float()
    assert counts.max() <= num  # never over
    assert counts.mean() > 0.95 * num, counts.mean()  # close to it on average
    for m in masks[:60]:
        assert min(components(m)) >= min_block  # every masked region holds a whole block
    a = block_mask(H, W, num, min_block=min_block, generator=torch.Generator().manual_seed(11))
    b = block_mask(H, W, num, min_block=min_block, generator=torch.Generator().manual_seed(11))
    c = block_mask(H, W, num, min_block=min_block, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_block_mask_placement_is_symmetric_and_reaches_every_cell():
    masks = block_masks(2000, 8, 8, 20, min_block=4, generator=torch.Generator().manual_seed(1))
    freq = masks.float().mean(0)  # (8, 8) how often each cell is masked
    # rectangles are placed uniformly, so the map is symmetric under flips (centre cells are covered by
    # more placements than corners, as in BEiT); every cell is reachable
    sd = math.sqrt(0.25 / 2000)
    assert (freq - freq.flip(0)).abs().max() < 6 * sd
    assert (freq - freq.flip(1)).abs().max() < 6 * sd
    assert (freq - freq.T).abs().max() < 6 * sd  # aspect range (0.3, 1/0.3) is symmetric
    assert freq.min() > 0.02


def test_block_mask_max_block_limits_each_block_and_global_rng_is_used():
    torch.manual_seed(0)
    a = block_mask(14, 14, 60, min_block=4, max_block=8)
    torch.manual_seed(0)
    b = block_mask(14, 14, 60, min_block=4, max_block=8)
    assert torch.equal(a, b) and a.sum() <= 60


def test_block_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="num_masked"):
        block_mask(4, 4, 17)
    with pytest.raises(ValueError, match="min_block"):
        block_mask(4, 4, 8, min_block=0)
