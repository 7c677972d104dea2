"""Seeded statistical tests of the data2vec 2.0 masks (docs/design.md section 5, "Masks"; issue 13 item 5).

References written here: the block geometry of step 2 (a loop over centres with clamping), the 4-neighbour
count, the independence expectation sum_c p_c^2, the exact-count formulas int(L (1 - R)).
"""

import math

import pytest
import torch

from data2vec.masking import inverse_block_mask, random_mask, visible_index


def kept_neighbour_fraction(kept: torch.Tensor, rows: int, cols: int) -> float:
    """Fraction of kept cells with at least one kept 4-neighbour (loops, written here)."""
    hits = total = 0
    for row in kept.reshape(-1, rows, cols).tolist():
        for i in range(rows):
            for j in range(cols):
                if not row[i][j]:
                    continue
                total += 1
                hits += any(0 <= i + a < rows and 0 <= j + b < cols and row[i + a][j + b]
                            for a, b in ((1, 0), (-1, 0), (0, 1), (0, -1)))
    return hits / total


@pytest.mark.parametrize("rows,cols,ratio,block", [(14, 14, 0.8, 3), (8, 8, 0.8, 2), (6, 10, 0.6, 3), (4, 4, 0.8, 2)])
def test_inverse_block_mask_keeps_exactly_int_L_times_keep_fraction_in_every_row(rows, cols, ratio, block):
    L = rows * cols
    expected_kept = int(L * (1 - ratio))  # released formula; 39 of 196 at R = 0.8
    for seed in range(40):
        mask = inverse_block_mask(16, rows, cols, ratio, block=block, generator=torch.Generator().manual_seed(seed))
        assert mask.dtype == torch.bool and mask.shape == (16, L)
        assert ((~mask).sum(dim=1) == expected_kept).all()
    assert int(196 * (1 - 0.8)) == 39  # the ViT-B numbers of docs/design.md section 5


def test_inverse_block_mask_follows_the_block_geometry_of_its_centres():
    """Reference for steps 1-2: the same centre draws (the documented first draw from the generator), blocks
    built by a loop with clamping; then step 3 may only trim (over-full) or only add (under-full)."""
    rows, cols, ratio, block, adjust, B = 14, 14, 0.8, 3, 0.07, 64
    L, keep = rows * cols, int(14 * 14 * 0.2)
    num_centres = int(L * (1 - ratio + adjust) / block**2)
    assert num_centres == 5  # docs/design.md section 5: ViT-B draws 5 centres
    generator = torch.Generator().manual_seed(3)
    centres = torch.randint(0, L, (B, num_centres), generator=torch.Generator().manual_seed(3))
    mask = inverse_block_mask(B, rows, cols, ratio, block=block, adjust=adjust, generator=generator)
    saw_trim = saw_fill = False
    for b in range(B):
        blocks = set()
        for c in centres[b].tolist():
            ci, cj = divmod(c, cols)
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    blocks.add((min(max(ci + di, 0), rows - 1), min(max(cj + dj, 0), cols - 1)))
        kept = {divmod(p, cols) for p in (~mask[b]).nonzero().flatten().tolist()}
        if len(blocks) >= keep:
            assert kept <= blocks
            saw_trim = True
        else:
            assert blocks <= kept
            saw_fill = True
    assert saw_trim and saw_fill  # both branches of step 3 were exercised


def test_inverse_block_masks_are_blocky_compared_with_random_masks_of_the_same_ratio():
    g = torch.Generator().manual_seed(0)
    inverse = ~inverse_block_mask(300, 14, 14, 0.8, generator=g)
    uniform = ~random_mask(300, 196, 0.8, generator=g)
    assert ((~inverse).sum(1) == (~uniform).sum(1)).all()  # same kept count: 39
    inv, uni = kept_neighbour_fraction(inverse, 14, 14), kept_neighbour_fraction(uniform, 14, 14)
    # uniform: 1 - (1 - 38/195)^4 ~ 0.58 for an interior cell; blocks of 9 keep most cells next to others
    assert uni < 0.65 and inv > 0.85, (inv, uni)


def test_inverse_block_mask_keeps_every_position_sometimes_with_a_border_deficit():
    mask = inverse_block_mask(4000, 14, 14, 0.8, generator=torch.Generator().manual_seed(1))
    freq = (~mask).float().mean(0).reshape(14, 14)  # per-cell keep frequency, mean 0.199
    assert freq.min() > 0.02  # no cell is never kept
    # clamped blocks: a corner is covered by 4 centre positions, an interior cell by 9
    assert freq[0, 0] < 0.8 * freq[3:11, 3:11].mean()


@pytest.mark.parametrize("make", ["inverse", "random"])
def test_clones_of_one_call_are_independent(make):
    """Rows 2k and 2k + 1 (clones of sample k) overlap as much as independent draws: E|A & B| = sum_c p_c^2."""
    g = torch.Generator().manual_seed(5)
    draws = 3000
    if make == "inverse":
        kept = ~inverse_block_mask(2 * draws, 8, 8, 0.8, block=2, generator=g)
    else:
        kept = ~random_mask(2 * draws, 64, 0.8, generator=g)
    pairs = kept.view(draws, 2, 64).float()
    overlap = (pairs[:, 0] * pairs[:, 1]).sum(1)  # (draws,) shared kept cells of the two clones
    p = kept.float().mean(0)  # (64,) keep frequency per cell
    expected = (p**2).sum().item()
    stderr = overlap.std().item() / math.sqrt(draws)
    assert abs(overlap.mean().item() - expected) < 5 * stderr + 0.02, (overlap.mean().item(), expected)
    assert (pairs[:, 0] == pairs[:, 1]).all(1).float().mean() < 0.01  # clones almost never coincide


def test_inverse_block_mask_errors_name_the_problem():
    for ratio in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(ValueError, match="mask_ratio"):
            inverse_block_mask(2, 8, 8, ratio)
    with pytest.raises(ValueError, match="does not fit"):
        inverse_block_mask(2, 2, 8, 0.5, block=3)
    with pytest.raises(ValueError, match="keeps no patch"):
        inverse_block_mask(2, 3, 3, 0.95, block=1)


def test_masks_are_reproducible_from_a_generator_or_the_global_rng():
    a = inverse_block_mask(4, 8, 8, 0.8, block=2, generator=torch.Generator().manual_seed(9))
    b = inverse_block_mask(4, 8, 8, 0.8, block=2, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    torch.manual_seed(4)
    c = random_mask(4, 30, 0.48)
    torch.manual_seed(4)
    assert torch.equal(c, random_mask(4, 30, 0.48))


# --------------------------------------------------------------------------------------------------
# random_mask (text)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length,ratio", [(512, 0.48), (37, 0.48), (10, 0.3), (64, 0.8)])
def test_random_mask_masks_exactly_length_minus_int_length_keep_per_row(length, ratio):
    for seed in range(30):
        mask = random_mask(8, length, ratio, generator=torch.Generator().manual_seed(seed))
        assert mask.dtype == torch.bool and mask.shape == (8, length)
        assert (mask.sum(1) == length - int(length * (1 - ratio))).all()


def test_random_mask_places_masks_uniformly():
    T, draws, ratio = 20, 20000, 0.48
    mask = random_mask(draws, T, ratio, generator=torch.Generator().manual_seed(0))
    p = (T - int(T * (1 - ratio))) / T  # 10 of 20
    freq = mask.float().mean(0)
    assert (freq - p).abs().max() < 5 * math.sqrt(p * (1 - p) / draws)


def test_random_mask_with_padding_masks_only_real_tokens_at_the_per_row_ratio():
    g = torch.Generator().manual_seed(2)
    B, T, ratio = 400, 24, 0.48
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    padding = torch.arange(T)[None, :] >= lengths[:, None]  # (B, T) True = pad
    mask = random_mask(B, T, ratio, padding_mask=padding, generator=g)
    assert not (mask & padding).any()  # a pad is never masked
    for n, row in zip(lengths.tolist(), mask, strict=True):
        assert int(row.sum()) == n - max(1, int(n * (1 - ratio)))  # at least one real token stays visible
    # uniform among the real tokens: full-length rows mask each position equally often
    full = random_mask(5000, T, ratio, padding_mask=torch.zeros(5000, T, dtype=torch.bool), generator=g)
    assert torch.equal(full.sum(1), torch.full((5000,), T - int(T * (1 - ratio))))
    assert (full.float().mean(0) - (T - int(T * (1 - ratio))) / T).abs().max() < 0.03


def test_random_mask_errors():
    with pytest.raises(ValueError, match="mask_ratio"):
        random_mask(2, 10, 1.0)
    with pytest.raises(ValueError, match="keeps no token"):
        random_mask(2, 3, 0.9)
    with pytest.raises(ValueError, match="padding_mask"):
        random_mask(2, 10, 0.5, padding_mask=torch.zeros(2, 9, dtype=torch.bool))


def test_visible_index_lists_visible_positions_in_order_then_filler():
    visible = torch.tensor([[True, False, True, True], [False, True, False, False]])
    index, padding = visible_index(visible)
    assert index[0].tolist() == [0, 2, 3] and index[1, 0].item() == 1
    assert padding.tolist() == [[False, False, False], [False, True, True]]
    index, padding = visible_index(torch.tensor([[True, False], [False, True]]))
    assert index.tolist() == [[0], [1]] and padding is None  # equal counts: no filler
