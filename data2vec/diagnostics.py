"""Representation health: the statistics that show a collapsing run, and the guard that stops one.

Statistics (pure functions of tensors; each returns a Python float, so calling one syncs with the device:
call them every N updates on a held-out probe batch, not every step). Letters: B batch, T tokens,
D width, N rows (real tokens or examples), K layers.

- `spread(x)`: the collapse watch of data2vec (arXiv 2202.03555, section 3; fairseq logs `target_var` /
  `pred_var` and stops below `min_target_var = 0.1` / `min_pred_var = 0.01` after 5000 updates): the
  standard deviation across the rows (masked tokens) of every feature, averaged over the features,
  mean_d sqrt(var_n(x_nd) + 1e-6). A 0-dim tensor (no sync), for the per-step stats.
- `explained_variance(pred, target)`: R^2 of the student's predictions for its targets, the scale-free
  reading of the regression loss (per step, 0-dim tensor like `spread`).
- `effective_rank(features)`: RankMe (Garrido et al. 2023, arXiv 2210.02885, Eq. 1),
  exp(-sum_k p_k log p_k) with p_k = s_k / ||s||_1 + eps over the singular values s of the (N, D) matrix.
  Between ~1 (every row on one line) and min(N, D) (all directions used equally).
- `token_anisotropy(tokens)`: the mean cosine similarity between distinct real tokens of a batch (all pairs
  i != j, across sequences too). ~0 for tokens spread over many directions, 1 when every token points the
  same way: the statistic that exposed layer-norm text targets (mean cosine 0.66 while `target_std` looked
  fine; Ethayarajh 2019 measures the same "anisotropy" of contextual embeddings).
- `layer_target_stats(layers)`: per teacher layer, the std across tokens (and the anisotropy) after the
  per-layer normalisation the targets use (`data2vec.targets`), so a run shows which layers carry signal.
- `prediction_cosine(pred, target)`: the mean cosine between the student's predictions and their targets.
- `knn_accuracy(...)`: DINO's weighted k-NN vote (Caron et al. 2021, eval_knn.py), delegated to the one
  implementation in `data2vec.probe.knn_predict`.

The engine's health pass (`data2vec.engine`, every `health_every` updates) reads any method's student
through `backbone_features` (text tokens; image patch tokens, CLS dropped; DINO's first global crop),
summarises them with `health_statistics` and, for labelled images, `online_knn` on a `LabelledProbe`
(mean-pooled patch tokens, as DINO's k-NN uses the CLS token: we pool because data2vec trains no CLS).

Guard: `CollapseGuard` raises `CollapseError` when a watched statistic stays below its minimum (std,
effective rank) or above its maximum (anisotropy) for `patience` consecutive checks after `warmup_steps`
updates. It lives here, not in a method module, so the engine (which receives a method object and never
imports one) can catch `CollapseError` for every method.

Differences from the originals: `spread` uses the population variance (fairseq: unbiased), so one masked
token does not give NaN; fairseq stops at the first low value, we wait `patience` checks. RankMe is computed
on any (N, D) matrix we are given (the paper uses 25.6k pooled embeddings; a batch of tokens has fewer rows,
so the rank is bounded by min(N, D): compare runs on the same probe batch). Neither statistic centres the
features (RankMe does not; a shared mean direction is exactly what anisotropy must see).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .probe import knn_predict, pool_tokens
from .targets import TARGET_NORMS, build_targets

__all__ = [
    "CollapseError", "CollapseGuard", "LabelledProbe", "backbone_features", "effective_rank", "health_statistics",
    "knn_accuracy", "layer_target_stats", "mean_pooled", "online_knn", "prediction_cosine", "real_tokens",
    "spread", "STATISTIC_ADVICE", "token_anisotropy",
]


class CollapseError(RuntimeError):
    """The targets or predictions became (nearly) constant across tokens: representation collapse."""


# ---- helpers -------------------------------------------------------------------------------------------


def _float64(x: Tensor) -> Tensor:
    """x detached in float64 (on the CPU when the device has no float64, e.g. Apple MPS)."""
    x = x.detach()
    if x.device.type == "mps":
        x = x.cpu()
    return x.double()


def real_tokens(tokens: Tensor, padding_mask: Tensor | None = None) -> Tensor:
    """The real (non-padding) tokens as rows: tokens (B, T, D) -> (N, D), N = number of real tokens.

    `padding_mask` bool (B, T), True = padding (None: every token is real). An (N, D) input is returned
    as it is (its padding mask, if given, is (N,))."""
    if tokens.dim() not in (2, 3):
        raise ValueError(f"tokens must be (B, T, D) or (N, D), got shape {tuple(tokens.shape)}")
    if padding_mask is None:
        return tokens.reshape(-1, tokens.shape[-1])  # (B, T, D) -> (B*T, D)
    if padding_mask.dtype != torch.bool or padding_mask.shape != tokens.shape[:-1]:
        raise ValueError(f"padding_mask must be bool {tuple(tokens.shape[:-1])} with True = padding, got "
                         f"{padding_mask.dtype} {tuple(padding_mask.shape)}")
    return tokens[~padding_mask]  # (B, T, D) -> (N, D): real tokens only


def spread(x: Tensor) -> Tensor:
    """Std across the rows of x (N, D) for every feature, averaged: mean_d sqrt(var_n(x_nd) + 1e-6).

    A 0-dim float tensor on x's device (no host sync); 0 for an empty x."""
    if x.shape[0] == 0:
        return x.new_zeros((), dtype=torch.float32)
    return torch.sqrt(x.detach().float().var(dim=0, unbiased=False) + 1e-6).mean()


def explained_variance(pred: Tensor, target: Tensor) -> Tensor:
    """The share of the targets' variance the predictions explain, pred and target (N, D):
    R^2 = 1 - sum_nd (pred_nd - target_nd)^2 / sum_nd (target_nd - mean_n target_nd)^2.

    Scale-free, unlike the regression loss: as the teacher improves, its averaged layers agree more and the
    targets spread out (`target_std` rises), so the loss can rise while the student keeps pace; this stays
    put then. 1 = perfect, 0 = no better than each feature's batch mean. A 0-dim tensor (no sync), 0 for
    fewer than 2 rows."""
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(f"pred and target must both be (N, D), got {tuple(pred.shape)} and {tuple(target.shape)}")
    if target.shape[0] < 2:
        return target.new_zeros((), dtype=torch.float32)
    p, t = pred.detach().float(), target.detach().float()
    residual = (p - t).pow(2).sum()
    total = (t - t.mean(dim=0)).pow(2).sum()  # (N, D) centred per feature
    return 1 - residual / total.clamp(min=1e-12)


# ---- effective rank (RankMe) ---------------------------------------------------------------------------


def effective_rank(features: Tensor, eps: float = 1e-7) -> float:
    """RankMe effective rank of features (N, D): a float in about [1, min(N, D)].

    Eq. 1 of Garrido et al. 2023: RankMe(Z) = exp(-sum_{k=1}^{min(N, D)} p_k log p_k),
    p_k = sigma_k(Z) / ||sigma(Z)||_1 + eps, sigma the singular values. The features are NOT centred (as in
    RankMe). Computed in float64. An all-zero matrix (sigma = 0) gives p_k = eps, i.e. ~1 (fully collapsed).
    For tokens (B, T, D) with padding pass `real_tokens(tokens, padding_mask)`.
    """
    if features.dim() != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(f"effective_rank expects a non-empty (N, D) matrix, got shape {tuple(features.shape)}; "
                         f"flatten tokens with real_tokens(tokens, padding_mask)")
    z = _float64(features)  # (N, D)
    if not torch.isfinite(z).all():
        raise ValueError("effective_rank got non-finite features (NaN/inf): the run diverged before this check")
    s = torch.linalg.svdvals(z)  # (min(N, D),) singular values
    total = s.sum()  # ||sigma||_1
    p = s / total.clamp(min=torch.finfo(torch.float64).tiny) + eps  # Eq. 1: p_k = sigma_k / ||sigma||_1 + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))  # exp(H(p))


# ---- anisotropy ----------------------------------------------------------------------------------------


def token_anisotropy(tokens: Tensor, padding_mask: Tensor | None = None) -> float:
    """Mean cosine similarity between distinct real tokens: a float in [-1/(N-1), 1].

    tokens (B, T, D) or (N, D); padding_mask bool (B, T) (or (N,)), True = padding, excluded. Every pair
    i != j of the N real tokens of the batch counts, across sequences too (the project's first measurement
    compared random tokens of different sentences). Not centred. With unit vectors u_i = x_i / ||x_i||:

        mean_{i != j} u_i . u_j = (||sum_i u_i||^2 - sum_i ||u_i||^2) / (N (N - 1)),

    O(N D) instead of the N x N Gram matrix (sum_i ||u_i||^2 = N, except that an all-zero token counts as a
    zero vector: cosine 0 with everything). Computed in float64.
    """
    x = real_tokens(tokens, padding_mask)  # (N, D)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"token_anisotropy needs at least 2 real tokens, got {n}; use a larger probe batch")
    u = F.normalize(_float64(x), dim=-1)  # (N, D) unit rows (zero rows stay zero)
    total = u.sum(dim=0)  # (D,) sum_i u_i
    return float(((total @ total) - (u * u).sum()) / (n * (n - 1)))


# ---- per-layer target statistics ----------------------------------------------------------------------


def layer_target_stats(layers: Sequence[Tensor], padding_mask: Tensor | None = None,
                       norm: str = "layer") -> dict[str, list[float]]:
    """Per teacher layer (first block first), after the per-layer target normalisation `norm`:

    "std": spread across the real tokens, mean_d sqrt(var_n(norm(a^l)_nd) + 1e-6) (0 = the layer gives
    every token the same target; ~1 for a healthy layer under instance norm);
    "anisotropy": `token_anisotropy` of norm(a^l) over the real tokens.

    layers: K tensors (B, T, D) (e.g. the teacher's `return_layers` output); padding_mask bool (B, T),
    True = padding; norm: one of `data2vec.targets.TARGET_NORMS` ("layer", "instance", "none"), the same
    function `build_targets` applies to each of the K layers (Eq. (targets): norm(a_t^l)).
    """
    if norm not in TARGET_NORMS:
        raise ValueError(f"norm must be one of {TARGET_NORMS} (the target's layer_norm), got {norm!r}")
    if len(layers) == 0:
        raise ValueError("layer_target_stats needs at least one layer (B, T, D)")
    stds, anisotropies = [], []
    for layer in layers:
        # norm(a^l): build_targets over this one layer (top_k=1) is exactly the targets' per-layer norm
        y = build_targets([layer.detach()], 1, layer_norm=norm, padding_mask=padding_mask)  # (B, T, D)
        rows = real_tokens(y, padding_mask)  # (N, D)
        stds.append(float(spread(rows)))
        anisotropies.append(token_anisotropy(rows))
    return {"std": stds, "anisotropy": anisotropies}


# ---- predictions vs targets ---------------------------------------------------------------------------


def prediction_cosine(pred: Tensor, target: Tensor) -> float:
    """Mean over rows of cos(pred_n, target_n), pred and target (N, D) (or (..., D), flattened): a float in [-1, 1].

    1 = every prediction points along its target; the regression loss can fall by matching the scale
    while this stays low."""
    if pred.shape != target.shape or pred.dim() < 2 or pred.numel() == 0:
        raise ValueError(f"pred and target must be non-empty (N, D) of one shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    p = _float64(pred).reshape(-1, pred.shape[-1])  # (..., D) -> (N, D)
    t = _float64(target).reshape(-1, target.shape[-1])  # (..., D) -> (N, D)
    return float(F.cosine_similarity(p, t, dim=-1, eps=1e-12).mean())


# ---- online k-NN --------------------------------------------------------------------------------------


def knn_accuracy(train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor,
                 k: int = 20, temperature: float | None = 0.07, num_classes: int | None = None) -> float:
    """Top-1 accuracy in percent of DINO's weighted k-NN vote (Caron et al. 2021, eval_knn.py).

    train_features (Ntr, D), train_labels (Ntr,) int, test_features (Nte, D), test_labels (Nte,) int.
    Features L2-normalised, cosine similarity s_j to the k nearest training rows,
    score(c) = sum_{j in top-k} exp(s_j / T) [y_j = c], prediction argmax_c (ties: lower class id);
    k = 20, T = 0.07 are DINO's defaults; `temperature=None` is a plain majority vote.
    The one implementation is `data2vec.probe.knn_predict`; the features are moved to the CPU in float32
    (a small labelled subset: a few hundred rows)."""
    if train_features.dim() != 2 or test_features.dim() != 2 or train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"features must be (N, D) with one D, got {tuple(train_features.shape)} and "
                         f"{tuple(test_features.shape)}")
    if train_labels.shape != train_features.shape[:1] or test_labels.shape != test_features.shape[:1]:
        raise ValueError(f"labels must be (N,), one per feature row, got {tuple(train_labels.shape)} for "
                         f"{train_features.shape[0]} train rows and {tuple(test_labels.shape)} for "
                         f"{test_features.shape[0]} test rows")
    if len(train_labels) == 0 or len(test_labels) == 0:
        raise ValueError("knn_accuracy needs at least one train and one test example")
    pred = knn_predict(train_features.detach().float().cpu(), train_labels.detach().cpu(),
                       test_features.detach().float().cpu(), k=k, temperature=temperature,
                       num_classes=num_classes)  # (Nte,) numpy
    correct = torch.as_tensor(pred) == test_labels.detach().cpu().long()  # (Nte,) bool, True = right
    return 100.0 * float(correct.double().mean())


# ---- a backbone's features on a probe batch (the engine's health pass) -------------------------------


def backbone_features(backbone: nn.Module, batch: dict) -> tuple[Tensor, Tensor | None]:
    """The student's final features on a batch, for any method: -> (tokens (B, T, D), padding_mask or None).

    Text batches {"input_ids" (B, T), "padding_mask" (B, T) bool, True = padding}: `backbone(input_ids,
    padding_mask)`. Image batches {"images" (B, C, H, W)}: the patch tokens of `backbone(images)`, CLS dropped
    (B, 1 + N, D) -> (B, N, D). Multi-crop batches {"crops": [global1, ...]} (DINO): the first global crop as
    the images. Audio batches {"waveform" (B, S), "lengths" (B,) optional}: the frames of `backbone(waveform,
    lengths)` with their frame padding mask. Call it under torch.no_grad in eval mode (the engine does). Any
    other layout: ValueError."""
    if not isinstance(batch, dict):
        raise ValueError(f"the health pass reads dict batches, got {type(batch).__name__}")
    if "input_ids" in batch:
        padding_mask = batch.get("padding_mask")
        return backbone(batch["input_ids"], padding_mask), padding_mask  # (B, T, D)
    if "waveform" in batch:
        out = backbone(batch["waveform"], batch.get("lengths"))  # (B, T, D)
        return out, backbone.frame_padding(batch.get("lengths"), out.shape[1])  # (B, T) True = padded frame
    images = batch["crops"][0] if "crops" in batch else batch.get("images")
    if images is None:
        raise ValueError(f"the health pass needs 'input_ids', 'images', 'crops' or 'waveform' in the batch, got "
                         f"{sorted(batch)}")
    return backbone(images)[:, 1:], None  # (B, 1 + N, D) -> (B, N, D): patch tokens only


def mean_pooled(tokens: Tensor, padding_mask: Tensor | None = None) -> Tensor:
    """The mean over the real tokens of each example: tokens (B, T, D) -> (B, D) (CLS already removed)."""
    return pool_tokens(tokens, "mean", padding_mask, has_cls=False)  # the probes' pooling


def health_statistics(tokens: Tensor, padding_mask: Tensor | None = None) -> dict[str, float]:
    """The representation statistics of one probe batch's final tokens (B, T, D), real tokens only:

    "anisotropy": `token_anisotropy` (mean cosine between distinct tokens; near 1 = one shared direction);
    "effective_rank": RankMe of the (N, D) real tokens; "rank_fraction": that divided by min(N, D) (1 = all
    directions used equally); "pooled_effective_rank": RankMe of the (B, D) mean-pooled examples (the
    embedding RankMe was defined on); "feature_std": `spread` of the tokens (0 = every token the same)."""
    rows = real_tokens(tokens, padding_mask)  # (N, D)
    rank = effective_rank(rows)
    return {"anisotropy": token_anisotropy(rows), "effective_rank": rank,
            "rank_fraction": rank / min(rows.shape), "pooled_effective_rank": effective_rank(
                mean_pooled(tokens, padding_mask)), "feature_std": float(spread(rows))}


@dataclass
class LabelledProbe:
    """A small fixed labelled image subset for the online k-NN (evaluation transform, no augmentation):
    the memory bank (train_*) and the held-out queries (test_*)."""

    train_images: Tensor  # (Ntr, C, H, W)
    train_labels: Tensor  # (Ntr,) int
    test_images: Tensor  # (Nte, C, H, W)
    test_labels: Tensor  # (Nte,) int
    num_classes: int | None = None  # None: 1 + the largest label
    k: int = 20  # DINO's k
    temperature: float = 0.07  # DINO's T


def online_knn(backbone: nn.Module, probe: LabelledProbe, batch_size: int, device: torch.device) -> float:
    """`knn_accuracy` (percent) of the mean-pooled patch tokens of `backbone` on the labelled probe."""

    def features(images: Tensor) -> Tensor:  # (N, C, H, W) -> (N, D), in chunks of batch_size
        chunks = [mean_pooled(backbone_features(backbone, {"images": chunk.to(device)})[0])
                  for chunk in images.split(batch_size)]
        return torch.cat(chunks)

    return knn_accuracy(features(probe.train_images), probe.train_labels, features(probe.test_images),
                        probe.test_labels, k=probe.k, temperature=probe.temperature, num_classes=probe.num_classes)


# ---- the guard ----------------------------------------------------------------------------------------

# What to change when a representation statistic is past its threshold, for every method (a guard's
# `advice_for` entry replaces the one of the same name; its `advice` follows with the method's own hints).
STATISTIC_ADVICE = {
    "anisotropy": "the student's tokens point in (nearly) one direction (mean cosine near 1): for data2vec text "
                  "use instance-norm targets (layer_norm=instance; layer-norm targets did this on small text "
                  "runs), else a lower learning rate or a slower teacher (tau closer to 1)",
    "effective_rank": "the features span only a few directions (RankMe effective rank near 1): a lower learning "
                      "rate or a longer lr warm-up, a slower teacher (tau closer to 1); DINO: more centering "
                      "(center_momentum) or a lower teacher temperature",
}
STATISTIC_ADVICE["rank_fraction"] = STATISTIC_ADVICE["effective_rank"]  # effective rank / min(N, D)


class CollapseGuard:
    """Stops a run whose statistics stay out of bounds for `patience` checks in a row after `warmup_steps`.

    `minimums` maps a statistic name (a key of the stats passed to `check`) to the value it must stay at or
    above (std, effective rank); `maximums` to the value it must stay at or below (anisotropy: near 1 =
    every token one direction). A threshold of 0 disables that statistic. A check is out of bounds when any
    watched statistic is past its threshold (a NaN counts as past it); `patience` such checks in a row
    raise `CollapseError`, whose message names each statistic past its threshold, its value and the
    threshold, then `advice_for[name]` (default `STATISTIC_ADVICE[name]`) for those statistics and `advice`
    (what to change for this method).
    Every watched statistic must be in every `check`'s stats: for statistics measured every N updates use
    a second guard, checked on those updates, with a patience counted in those checks.
    """

    def __init__(self, minimums: dict[str, float], warmup_steps: int, patience: int, *, method: str, advice: str,
                 maximums: dict[str, float] | None = None, advice_for: dict[str, str] | None = None):
        for kind, thresholds in (("minimum", minimums), ("maximum", maximums or {})):
            for name, value in thresholds.items():
                if not value >= 0:
                    raise ValueError(f"collapse {kind} for {name!r} must be >= 0 (0 disables it), got {value}")
        if int(patience) < 1:
            raise ValueError(f"collapse patience must be >= 1 check, got {patience}")
        self.minimums = {name: float(value) for name, value in minimums.items() if value > 0}
        self.maximums = {name: float(value) for name, value in (maximums or {}).items() if value > 0}
        self.warmup_steps = int(warmup_steps)
        self.patience = int(patience)
        self.method = method
        self.advice = advice
        self.advice_for = {**STATISTIC_ADVICE, **(advice_for or {})}
        self.steps_below = 0  # consecutive checks with at least one statistic past its threshold

    def _past(self, stats: dict[str, float]) -> list[str]:
        """'name=value (min m)' / 'name=value (max m)' for every watched statistic past its threshold."""
        past = []
        for kind, thresholds, ok in (("min", self.minimums, lambda v, t: v >= t),
                                     ("max", self.maximums, lambda v, t: v <= t)):
            for name, threshold in thresholds.items():
                if name not in stats:
                    raise KeyError(f"the collapse guard watches {name!r} but the stats have only {sorted(stats)}; "
                                   f"pass it on every check (or set its threshold to 0)")
                value = float(stats[name])
                if not ok(value, threshold):  # NaN fails both comparisons: past the threshold
                    past.append((name, f"{name}={value:.4g} ({kind} {threshold:g})"))
        return past

    def check(self, num_updates: int, stats: dict[str, float]) -> None:
        """Count an out-of-bounds check or reset the count; raise CollapseError after `patience` in a row."""
        if not (self.minimums or self.maximums) or num_updates < self.warmup_steps:
            return
        past = self._past(stats)
        self.steps_below = self.steps_below + 1 if past else 0
        if self.steps_below >= self.patience:
            values = ", ".join(text for _, text in past)
            hints = "; ".join(self.advice_for[name] for name, _ in past if name in self.advice_for)
            raise CollapseError(f"{self.method} collapsed at update {num_updates}: {values} for {self.steps_below} "
                                f"checks in a row; " + (f"{hints}; " if hints else "") + self.advice)
