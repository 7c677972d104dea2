"""Representation-health statistics and the collapse guard (data2vec/diagnostics.py), against references
written here: singular values chosen by construction, pairwise loops, numpy norms, a brute-force k-NN."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from data2vec.diagnostics import (
    CollapseError,
    CollapseGuard,
    effective_rank,
    explained_variance,
    knn_accuracy,
    layer_target_stats,
    prediction_cosine,
    real_tokens,
    spread,
    token_anisotropy,
)

# ---- references -------------------------------------------------------------------------------------------


def rankme_from_singular_values(singular_values, eps=1e-7):
    """RankMe by hand (Garrido et al. 2023, Eq. 1) from a list of singular values."""
    total = sum(singular_values)
    p = [s / total + eps for s in singular_values]
    return math.exp(-sum(pk * math.log(pk) for pk in p))


def orthonormal_columns(rows, cols, seed):
    """A (rows, cols) matrix with orthonormal columns (QR of a Gaussian matrix), float64."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(rows, cols)))
    return q


def pairwise_mean_cosine(rows):
    """Mean cosine over all ordered pairs i != j, by a double loop over numpy rows (N, D)."""
    total, count = 0.0, 0
    for i in range(len(rows)):
        for j in range(len(rows)):
            if i != j:
                total += float(rows[i] @ rows[j]) / (np.linalg.norm(rows[i]) * np.linalg.norm(rows[j]))
                count += 1
    return total / count


def numpy_real_rows(x, pad):
    """(B, T, D) numpy and (B, T) bool pad -> list of the real rows, batch-major order."""
    return np.array([x[b, t] for b in range(x.shape[0]) for t in range(x.shape[1]) if not pad[b, t]])


# ---- effective rank ---------------------------------------------------------------------------------------


def test_effective_rank_of_a_rank_one_matrix_is_one():
    rng = np.random.default_rng(0)
    x = np.outer(rng.normal(size=50), rng.normal(size=8))  # (N=50, D=8), rank 1
    expected = rankme_from_singular_values([1.0] + [0.0] * 7)  # one nonzero singular value (its scale cancels)
    assert effective_rank(torch.tensor(x)) == pytest.approx(expected, rel=1e-6)
    assert abs(effective_rank(torch.tensor(x, dtype=torch.float32)) - 1.0) < 1e-3


def test_effective_rank_of_isotropic_gaussian_is_close_to_d():
    torch.manual_seed(0)
    d = 16
    x = torch.randn(20000, d)  # N >> D: singular values all ~ sqrt(N) (relative spread ~ sqrt(D/N) = 3%)
    rank = effective_rank(x)
    assert 0.995 * d < rank <= d


def test_effective_rank_of_constructed_singular_values_matches_the_formula():
    n, d = 30, 6
    singular_values = [4.0, 3.0, 2.0, 1.0]
    u = orthonormal_columns(n, 4, seed=1)  # (N, 4)
    v = orthonormal_columns(d, 4, seed=2)  # (D, 4)
    x = u @ np.diag(singular_values) @ v.T  # (N, D) with exactly these singular values, and two zeros
    expected = rankme_from_singular_values(singular_values + [0.0, 0.0])
    assert effective_rank(torch.tensor(x)) == pytest.approx(expected, rel=1e-9)
    # two equal singular values: effective rank 2 (up to eps); scale does not matter
    x2 = u[:, :2] @ np.diag([5.0, 5.0]) @ v[:, :2].T
    assert effective_rank(torch.tensor(x2)) == pytest.approx(2.0, rel=1e-5)
    assert effective_rank(torch.tensor(7.0 * x)) == pytest.approx(expected, rel=1e-9)


def test_effective_rank_does_not_centre_the_features():
    torch.manual_seed(0)
    x = 10.0 + 0.01 * torch.randn(500, 8)  # one shared mean direction, tiny isotropic noise around it
    assert effective_rank(x) < 1.1  # RankMe sees the shared direction (centred, this would be ~8)
    assert effective_rank(x - x.mean(0)) > 7.5


def test_effective_rank_rejects_bad_input():
    for bad in (torch.zeros(5), torch.zeros(0, 4), torch.zeros(2, 3, 4)):
        with pytest.raises(ValueError, match="effective_rank expects"):
            effective_rank(bad)
    with pytest.raises(ValueError, match="non-finite"):
        effective_rank(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    assert effective_rank(torch.zeros(4, 3)) == pytest.approx(1.0, abs=1e-4)  # all-zero: fully collapsed


# ---- anisotropy ---------------------------------------------------------------------------------------------


def test_anisotropy_of_identical_tokens_is_one_and_of_opposite_tokens_minus_one():
    v = torch.randn(8)
    assert token_anisotropy(v.expand(2, 5, 8)) == pytest.approx(1.0, abs=1e-12)  # (B=2, T=5, D=8)
    assert token_anisotropy(torch.stack([v, -3 * v])) == pytest.approx(-1.0, abs=1e-12)


def test_anisotropy_of_orthonormal_tokens_is_zero():
    q = torch.tensor(orthonormal_columns(8, 8, seed=3))  # rows orthonormal too (square)
    assert abs(token_anisotropy(q)) < 1e-12
    assert abs(token_anisotropy(q[:5] * torch.arange(1.0, 6.0)[:, None])) < 1e-12  # norms do not matter


def test_anisotropy_of_random_high_dimensional_tokens_is_near_zero():
    torch.manual_seed(0)
    # pair cosines have mean 0 and std 1/sqrt(D) = 0.016; their mean over 64 * 63 pairs is far smaller
    assert abs(token_anisotropy(torch.randn(4, 16, 4096))) < 0.01


def test_anisotropy_fast_formula_equals_pairwise_loop_and_ignores_padding():
    torch.manual_seed(0)
    x = torch.randn(3, 7, 5, dtype=torch.float64) + 0.7  # (B=3, T=7, D=5), a shared offset: cosine > 0
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[0, 5:] = True
    pad[2, 2:] = True
    expected = pairwise_mean_cosine(numpy_real_rows(x.numpy(), pad.numpy()))
    assert expected > 0.1
    assert token_anisotropy(x, pad) == pytest.approx(expected, abs=1e-12)
    changed = x.clone()
    changed[pad] = 1000.0 * torch.randn(int(pad.sum()), 5, dtype=torch.float64)  # only padded tokens change
    assert token_anisotropy(changed, pad) == pytest.approx(expected, abs=1e-12)
    assert token_anisotropy(changed) != pytest.approx(expected, abs=1e-3)  # without the mask they count
    # the (N, D) form with an (N,) mask is the same statistic
    assert token_anisotropy(x.reshape(21, 5), pad.reshape(21)) == pytest.approx(expected, abs=1e-12)


def test_anisotropy_rejects_too_few_tokens_and_bad_masks():
    with pytest.raises(ValueError, match="at least 2 real tokens"):
        token_anisotropy(torch.randn(1, 3, 4), torch.tensor([[False, True, True]]))
    with pytest.raises(ValueError, match="padding_mask must be bool"):
        token_anisotropy(torch.randn(2, 3, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="tokens must be"):
        real_tokens(torch.randn(4))


# ---- per-layer target statistics -------------------------------------------------------------------------


def reference_norm(x, pad, kind):
    """Per-layer target norm by hand (numpy, (B, T, D)): layer norm over D, instance norm over real T."""
    if kind == "layer":
        mean = x.mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-5)
    if kind == "instance":
        out = np.zeros_like(x)
        for b in range(x.shape[0]):
            real = x[b][~pad[b]]  # (T_b, D)
            mean, var = real.mean(0), real.var(0)
            out[b] = (x[b] - mean) / np.sqrt(var + 1e-5)
        return out
    return x


@pytest.mark.parametrize("kind", ["layer", "instance", "none"])
def test_layer_target_stats_match_a_numpy_reference(kind):
    torch.manual_seed(0)
    layers = [torch.randn(2, 6, 4, dtype=torch.float64) * (k + 1) + k for k in range(3)]  # K=3 x (B, T, D)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1, 4:] = True
    stats = layer_target_stats(layers, pad, norm=kind)
    assert set(stats) == {"std", "anisotropy"}
    for k, layer in enumerate(layers):
        rows = numpy_real_rows(reference_norm(layer.numpy(), pad.numpy(), kind), pad.numpy())  # (N, D)
        std = np.mean(np.sqrt(rows.var(0) + 1e-6))  # population variance across tokens, per feature
        assert stats["std"][k] == pytest.approx(std, rel=1e-5)
        assert stats["anisotropy"][k] == pytest.approx(pairwise_mean_cosine(rows), abs=1e-5)


def test_layer_target_stats_show_a_layer_without_signal():
    torch.manual_seed(0)
    healthy = torch.randn(2, 8, 16)
    dead = torch.randn(16).expand(2, 8, 16)  # every token the same vector: no signal for the student
    stats = layer_target_stats([healthy, dead], norm="layer")
    assert stats["std"][0] > 0.8 and stats["std"][1] < 0.01  # sqrt(1e-6) = 0.001 for a constant layer
    assert stats["anisotropy"][1] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="norm must be one of"):
        layer_target_stats([healthy], norm="batch")


# ---- prediction cosine ----------------------------------------------------------------------------------------


def test_prediction_cosine_matches_a_loop():
    torch.manual_seed(0)
    pred, target = torch.randn(9, 5), torch.randn(9, 5)
    expected = np.mean([float(p @ t) / (np.linalg.norm(p) * np.linalg.norm(t))
                        for p, t in zip(pred.double().numpy(), target.double().numpy(), strict=True)])
    assert prediction_cosine(pred, target) == pytest.approx(expected, abs=1e-12)
    assert prediction_cosine(3 * target, target) == pytest.approx(1.0, abs=1e-12)
    assert prediction_cosine(-target, target) == pytest.approx(-1.0, abs=1e-12)
    with pytest.raises(ValueError, match="one shape"):
        prediction_cosine(pred, target[:, :4])


# ---- k-NN -------------------------------------------------------------------------------------------------------


def brute_force_knn(train, labels, test, k, temperature, num_classes):
    """DINO's weighted vote by hand: cosine similarities, top-k, sum exp(s / T) per class, argmax."""
    preds = []
    for q in test:
        sims = [float(q @ t) / (np.linalg.norm(q) * np.linalg.norm(t)) for t in train]
        top = sorted(range(len(train)), key=lambda j: -sims[j])[:k]
        score = [0.0] * num_classes
        for j in top:
            score[labels[j]] += math.exp(sims[j] / temperature) if temperature is not None else 1.0
        preds.append(max(range(num_classes), key=lambda c: (score[c], -c)))  # ties: lower class id
    return preds


@pytest.mark.parametrize("k,temperature", [(1, 0.07), (5, 0.07), (7, 0.5), (7, None)])
def test_knn_accuracy_matches_brute_force(k, temperature):
    rng = np.random.default_rng(k)
    train, labels = rng.normal(size=(30, 6)), rng.integers(0, 3, size=30)
    test = rng.normal(size=(12, 6))
    preds = brute_force_knn(train, labels, test, k, temperature, 3)
    test_labels = np.array(preds)
    test_labels[:3] = (test_labels[:3] + 1) % 3  # three wrong on purpose: 75 % exactly
    train_t = torch.tensor(train, dtype=torch.float32, requires_grad=True)  # gradients are detached
    accuracy = knn_accuracy(train_t, torch.tensor(labels), torch.tensor(test), torch.tensor(test_labels),
                            k=k, temperature=temperature, num_classes=3)
    assert accuracy == pytest.approx(75.0)


def test_knn_accuracy_weights_close_neighbours():
    # one close neighbour of class 0 against two farther ones of class 1: the sharp weights pick class 0,
    # a plain majority picks class 1 (the reference computes both)
    angles = [0.0, 0.6, -0.6]
    train = torch.tensor([[math.cos(a), math.sin(a)] for a in angles])
    labels = torch.tensor([0, 1, 1])
    query, answer = torch.tensor([[1.0, 0.05]]), torch.tensor([0])
    assert brute_force_knn(train.numpy(), labels.numpy(), query.numpy(), 3, 0.07, 2) == [0]
    assert brute_force_knn(train.numpy(), labels.numpy(), query.numpy(), 3, None, 2) == [1]
    assert knn_accuracy(train, labels, query, answer, k=3, temperature=0.07) == 100.0
    assert knn_accuracy(train, labels, query, answer, k=3, temperature=None) == 0.0
    with pytest.raises(ValueError, match="labels must be"):
        knn_accuracy(train, labels[:2], query, answer)


# ---- spread ---------------------------------------------------------------------------------------------------


def test_spread_is_the_mean_population_std():
    x = np.random.default_rng(0).normal(size=(10, 3))
    assert float(spread(torch.tensor(x))) == pytest.approx(np.mean(np.sqrt(x.var(0) + 1e-6)), rel=1e-6)
    assert float(spread(torch.zeros(0, 3))) == 0.0


def test_explained_variance_is_sklearns_variance_weighted_r2():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(0)
    target = rng.normal(size=(50, 4)) * np.array([0.5, 1.0, 2.0, 3.0])  # features of different spread
    pred = target + rng.normal(size=(50, 4))
    reference = r2_score(target, pred, multioutput="variance_weighted")  # 1 - sum SS_res / sum SS_tot
    assert float(explained_variance(torch.tensor(pred), torch.tensor(target))) == pytest.approx(reference, rel=1e-5)
    t = torch.tensor(target)
    assert float(explained_variance(t, t)) == pytest.approx(1.0)
    assert float(explained_variance(t.mean(0).expand_as(t), t)) == pytest.approx(0.0, abs=1e-6)  # the batch mean
    assert float(explained_variance(torch.tensor(2 * pred), 2 * t)) == pytest.approx(reference, rel=1e-5)  # scale-free
    assert float(explained_variance(torch.zeros(1, 4), torch.ones(1, 4))) == 0.0  # one row: no variance to explain
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        explained_variance(torch.zeros(3, 4), torch.zeros(3, 5))


# ---- the guard ---------------------------------------------------------------------------------------------------


def guard(**kwargs):
    defaults = dict(minimums={}, warmup_steps=0, patience=1, method="data2vec", advice="lower the lr")
    return CollapseGuard(**{**defaults, **kwargs})


def test_guard_minimum_keeps_its_behaviour():
    g = guard(minimums={"target_std": 0.1, "pred_std": 0.0}, warmup_steps=5, patience=3)
    for update in range(5):  # warm-up: never counted
        g.check(update, {"target_std": 0.0, "pred_std": 0.0})
    assert g.steps_below == 0
    g.check(5, {"target_std": 0.05, "pred_std": 1.0})
    g.check(6, {"target_std": 0.05, "pred_std": 1.0})
    g.check(7, {"target_std": 0.5, "pred_std": 1.0})  # back in bounds: the count resets
    assert g.steps_below == 0
    g.check(8, {"target_std": torch.tensor(0.05), "pred_std": 1.0})  # 0-dim tensors (spread) are fine
    g.check(9, {"target_std": 0.05, "pred_std": 1.0})
    with pytest.raises(CollapseError) as error:
        g.check(10, {"target_std": 0.05, "pred_std": 1.0})
    message = str(error.value)
    assert "data2vec collapsed at update 10" in message and "target_std=0.05 (min 0.1)" in message
    assert "for 3 checks in a row" in message and message.endswith("lower the lr")
    assert "pred_std" not in message  # disabled (0) and in bounds


def test_guard_maximum_stops_anisotropic_tokens_with_advice():
    g = guard(maximums={"anisotropy": 0.9}, patience=2,
              advice_for={"anisotropy": "tokens share one direction: try layer_norm=instance"})
    g.check(100, {"anisotropy": 0.9})  # at the threshold: in bounds
    g.check(101, {"anisotropy": 0.95})
    assert g.steps_below == 1
    with pytest.raises(CollapseError) as error:
        g.check(102, {"anisotropy": 0.97})
    message = str(error.value)
    assert "anisotropy=0.97 (max 0.9)" in message
    assert "tokens share one direction: try layer_norm=instance; lower the lr" in message
    g = guard(maximums={"anisotropy": 0.9})  # no advice_for: the generic advice names the statistic's fix
    with pytest.raises(CollapseError, match="one direction.*layer_norm=instance.*; lower the lr"):
        g.check(0, {"anisotropy": 0.99})


def test_guard_watches_minimums_and_maximums_together():
    g = guard(minimums={"effective_rank": 2.0}, maximums={"anisotropy": 0.9}, patience=2,
              advice_for={"effective_rank": "rank advice"})
    g.check(0, {"effective_rank": 1.5, "anisotropy": 0.2})
    with pytest.raises(CollapseError) as error:
        g.check(1, {"effective_rank": 30.0, "anisotropy": 0.99})  # a different statistic past: still in a row
    message = str(error.value)
    assert "anisotropy=0.99 (max 0.9)" in message and "effective_rank" not in message
    g = guard(minimums={"effective_rank": 2.0}, patience=1, advice_for={"effective_rank": "rank advice"})
    with pytest.raises(CollapseError, match=r"effective_rank=1\.5 \(min 2\) for 1 checks in a row; rank advice; lower"):
        g.check(0, {"effective_rank": 1.5})


def test_guard_zero_disables_and_nan_counts_as_past():
    g = guard(minimums={"effective_rank": 0}, maximums={"anisotropy": 0.0})
    for update in range(5):
        g.check(update, {})  # nothing watched: nothing needed, nothing raised
    g = guard(maximums={"anisotropy": 0.9})
    with pytest.raises(CollapseError, match="anisotropy=nan"):
        g.check(0, {"anisotropy": float("nan")})


def test_guard_rejects_missing_statistics_and_bad_settings():
    with pytest.raises(KeyError, match="watches 'anisotropy'"):
        guard(maximums={"anisotropy": 0.9}).check(0, {"loss": 1.0})
    with pytest.raises(ValueError, match="must be >= 0"):
        guard(maximums={"anisotropy": -0.5})
    with pytest.raises(ValueError, match="patience must be >= 1"):
        guard(patience=0)
