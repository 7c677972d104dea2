"""Frozen-feature evaluation: feature extraction, a linear probe and a weighted k-NN classifier.

What it implements
- `extract_features(backbone, loader, pooling)`: run a frozen backbone (eval mode, no gradients) and pool
  its output tokens into one vector per example:
    vision, pooling="mean": mean of the patch tokens (CLS dropped), z = (1/N) sum_{i=1..N} x_i
      (BEiT / data2vec-vision linear probing average-pools the patch tokens, data2vec paper section 5.1);
    vision, pooling="cls": the CLS token x_0 (DINO's linear and k-NN evaluations);
    text,   pooling="mean": mean over the non-padding tokens, z = sum_t (1 - pad_t) x_t / sum_t (1 - pad_t);
    text,   pooling="cls": the first token (<s> / [CLS]);
    speech, pooling="mean": mean over the real frames (padded frames excluded, as for text); speech has no CLS.
- `linear_probe(train_x, train_y, test_x, test_y)`: multinomial logistic regression (scikit-learn, L-BFGS)
  on standardised features, z' = (z - mean_train) / std_train. The inverse L2 strength C is chosen from a
  log-spaced grid by stratified k-fold cross-validation on the training split only, then the probe is
  refitted on the whole training split and scored once on the test split.
- `knn_classify(train_x, train_y, test_x, k, temperature)`: the weighted k-NN of DINO's `eval_knn`
  (Caron et al. 2021, section 4.1 and appendix; Wu et al. 2018, "instance discrimination", eq. 7):
  features L2-normalised, cosine similarities s_j to the k nearest training examples, and a class score
    score(c) = sum_{j in top-k} exp(s_j / T) [y_j = c],   T = 0.07, k = 20 (DINO's defaults);
  the prediction is argmax_c score(c). `temperature=None` gives a plain majority vote.

- `few_label_eval(...)`: the few-label protocol shared by `data2vec probe`, `data2vec demo` and `data2vec compare`:
  the linear probe and/or the k-NN on seeded labelled subsets (N per class, or a stratified fraction of the
  labels, drawn by `label_splits`), one score per subset. The label-split helpers (`few_label_indices`,
  `fraction_indices`, `validation_split`) live in `data2vec.label_splits` and are importable from here too.
- `layer_features(backbone, batches)` + `choose_features(...)`: which features a frozen probe reads is part of
  the protocol (BEiT's linear probe reads an intermediate block; a random ViT's final mean-pooled tokens can lose
  to raw pixels): every block's output and the final (normed) output, each mean-pooled and as CLS, are scored by
  the k-NN on a validation split carved from the training data, and the best is used on the test split.

Differences from the originals
- DINO's linear evaluation trains a linear layer with SGD for 100 epochs with augmentation on ImageNet;
  at our scale (hundreds of labelled examples) a full-batch logistic regression with a cross-validated
  L2 penalty is the stable, cheap equivalent (as in SimCLR's / BYOL's "linear evaluation" on small
  transfer sets, which also use L-BFGS logistic regression with a validated penalty).
- k-NN ties (equal scores) go to the lower class id (argmax order).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from .heads import POOLINGS
from .label_splits import few_label_indices, fraction_indices, validation_split

# Inverse L2 strengths tried by the linear probe: 1e-3 .. 1e2 (6 values), a range wide enough for
# standardised features of any width (SimCLR's transfer evaluation uses 45 values over 1e-6 .. 1e5).
DEFAULT_CS = tuple(float(c) for c in np.logspace(-3, 2, 6))


# ---- features ----------------------------------------------------------------------------------------


def pool_tokens(tokens: Tensor, pooling: str = "mean", padding_mask: Tensor | None = None,
                has_cls: bool = True) -> Tensor:
    """Tokens (B, T, D) -> one vector per example (B, D).

    Vision (`padding_mask` None, `has_cls` True): "mean" averages tokens 1..N (the patches), "cls" takes
    token 0. Text (`padding_mask` bool (B, T), True = pad): "mean" averages the non-pad tokens, "cls"
    takes token 0 (<s> / [CLS]).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; use 'mean' (average of tokens) or 'cls' (first token)")
    if tokens.dim() != 3:
        raise ValueError(f"pool_tokens expects (B, T, D) tokens, got {tuple(tokens.shape)}")
    if pooling == "cls":
        return tokens[:, 0]  # (B, D)
    if padding_mask is not None:
        if padding_mask.dtype != torch.bool or padding_mask.shape != tokens.shape[:2]:
            raise ValueError("padding_mask must be bool (B, T) with True = pad")
        keep = (~padding_mask).unsqueeze(-1).to(tokens.dtype)  # (B, T, 1): 1 = real token
        return (tokens * keep).sum(1) / keep.sum(1).clamp_min(1.0)  # (B, D)
    patches = tokens[:, 1:] if has_cls and tokens.shape[1] > 1 else tokens  # (B, N, D)
    return patches.mean(dim=1)  # (B, D)


def _as_batch(batch) -> dict:
    """Accept dict batches or (images, labels) tuples (torchvision's default collate)."""
    if isinstance(batch, Mapping):
        return dict(batch)
    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        return {"images": batch[0], "labels": batch[1]}
    raise ValueError("batches must be dicts (images/input_ids, labels) or (images, labels) pairs")


def _speech_frames(backbone: nn.Module, batch: dict, device, return_layers: str | None = None):
    """A speech batch {"waveform" (B, S), "lengths" (B,)} through the backbone -> (output, frame padding (B, T))."""
    lengths = batch.get("lengths")
    lengths = None if lengths is None else lengths.to(device)
    out = backbone(batch["waveform"].to(device), lengths, return_layers=return_layers)
    final = out[0] if return_layers else out  # (B, T, D)
    return out, backbone.frame_padding(lengths, final.shape[1])


def _pool_frames(frames: Tensor, pooling: str, padding: Tensor | None) -> Tensor:
    if pooling != "mean":
        raise ValueError(f"speech frames have no CLS token; use pooling 'mean', got {pooling!r}")
    if padding is None:
        return frames.mean(dim=1)  # (B, D)
    return pool_tokens(frames, "mean", padding_mask=padding, has_cls=False)  # (B, D) over the real frames


@torch.no_grad()
def extract_features(backbone: nn.Module, batches: Iterable, pooling: str = "mean",
                     device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Pooled features (N, D) float32 and labels (N,) of every example in `batches`, backbone frozen.

    `batches` yields dicts with `images` (vision) or `input_ids` + `padding_mask` (+ `token_type_ids`)
    (text), and `labels`; or (images, labels) pairs. The backbone is put in eval mode for the pass and
    its previous mode is restored afterwards.
    """
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    try:
        for raw in batches:
            batch = _as_batch(raw)
            if "images" in batch:
                tokens = backbone(batch["images"].to(device))  # (B, 1 + N, D)
                z = pool_tokens(tokens, pooling)
            elif "waveform" in batch:
                tokens, pad = _speech_frames(backbone, batch, device)  # (B, T, D), (B, T) or None
                z = _pool_frames(tokens, pooling, pad)
            elif "input_ids" in batch:
                pad = batch.get("padding_mask")
                pad = pad.to(device) if pad is not None else None
                types = batch.get("token_type_ids")
                tokens = backbone(batch["input_ids"].to(device), padding_mask=pad,
                                  token_type_ids=types.to(device) if types is not None else None)  # (B, T, D)
                z = pool_tokens(tokens, pooling, padding_mask=pad, has_cls=False)
            else:
                raise ValueError(f"a batch needs `images`, `input_ids` or `waveform`, got keys {sorted(batch)}")
            feats.append(z.float().cpu().clone())  # clone: a CLS view would keep the batch's (B, T, D) tokens alive
            labels.append(torch.as_tensor(batch["labels"]).cpu())
    finally:
        backbone.train(was_training)
    if not feats:
        raise ValueError("extract_features: no batches (is the data set empty?)")
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


# ---- linear probe ------------------------------------------------------------------------------------


def standardize(train_x: np.ndarray, *others: np.ndarray, eps: float = 1e-6):
    """z' = (z - mean) / std with the training split's statistics, applied to every given array."""
    mean = train_x.mean(axis=0, keepdims=True)
    std = train_x.std(axis=0, keepdims=True) + eps
    out = [(train_x - mean) / std] + [(x - mean) / std for x in others]
    return out[0] if not others else tuple(out)


def _fit_logreg(x: np.ndarray, y: np.ndarray, C: float, max_iter: int, seed: int):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)  # lbfgs, multinomial (softmax)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a few unconverged fits at large C are harmless
        clf.fit(x, y)
    return clf


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    Cs: Iterable[float] = DEFAULT_CS,
    folds: int = 3,
    max_iter: int = 1000,
    seed: int = 0,
    val: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Logistic regression on standardised frozen features; C chosen by k-fold CV on the train split, or, with
    `val` = (val_x, val_y) (a validation split carved from the training data: one fit per C instead of `folds`,
    the cheap choice for tens of thousands of examples), by accuracy on `val`.

    Returns {"accuracy": test accuracy in percent, "C": chosen C, "cv_accuracy": its mean CV (or validation)
    accuracy (%)}. With fewer than 2 examples in some class (no fold can hold it out) the middle C of the grid
    is used.
    """
    from sklearn.model_selection import StratifiedKFold

    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    Cs = list(Cs)
    if len(np.unique(train_y)) < 2:
        raise ValueError("linear_probe: the training labels hold a single class; give examples of 2+ classes")
    if val is not None:
        train_x, test_x, val_x = standardize(np.asarray(train_x, np.float64), np.asarray(test_x, np.float64),
                                             np.asarray(val[0], np.float64))
        fits = {C: _fit_logreg(train_x, train_y, C, max_iter, seed) for C in Cs}
        val_acc = {C: float((fit.predict(val_x) == np.asarray(val[1])).mean()) for C, fit in fits.items()}
        best_C = max(Cs, key=lambda c: (val_acc[c], -c))  # ties: the stronger penalty (smaller C)
        acc = float((fits[best_C].predict(test_x) == test_y).mean())
        return {"accuracy": 100.0 * acc, "C": best_C, "cv_accuracy": 100.0 * val_acc[best_C]}
    train_x, test_x = standardize(np.asarray(train_x, np.float64), np.asarray(test_x, np.float64))
    counts = np.bincount(np.unique(train_y, return_inverse=True)[1])
    k = int(min(folds, counts.min()))
    cv_scores = {}
    if k >= 2 and len(Cs) > 1:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        for C in Cs:
            accs = []
            for tr, va in splitter.split(train_x, train_y):
                clf = _fit_logreg(train_x[tr], train_y[tr], C, max_iter, seed)
                accs.append(float((clf.predict(train_x[va]) == train_y[va]).mean()))
            cv_scores[C] = float(np.mean(accs))
        best_C = max(Cs, key=lambda c: (cv_scores[c], -c))  # ties: the stronger penalty (smaller C)
    else:
        best_C = Cs[len(Cs) // 2]
    clf = _fit_logreg(train_x, train_y, best_C, max_iter, seed)
    acc = float((clf.predict(test_x) == test_y).mean())
    return {"accuracy": 100.0 * acc, "C": best_C, "cv_accuracy": 100.0 * cv_scores.get(best_C, float("nan"))}


# ---- k-NN ----------------------------------------------------------------------------------------------


def knn_predict(
    train_x: np.ndarray | Tensor,
    train_y: np.ndarray | Tensor,
    test_x: np.ndarray | Tensor,
    k: int = 20,
    temperature: float | None = 0.07,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> np.ndarray:
    """Weighted k-NN predictions (see the module docstring); `temperature=None` = plain majority vote."""
    train = torch.nn.functional.normalize(torch.as_tensor(np.asarray(train_x), dtype=torch.float32), dim=1)
    test = torch.nn.functional.normalize(torch.as_tensor(np.asarray(test_x), dtype=torch.float32), dim=1)
    labels = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature is not None and temperature <= 0:
        raise ValueError(f"temperature must be > 0 (DINO uses 0.07) or None for a majority vote, got {temperature}")
    k = min(k, len(train))
    C = int(num_classes if num_classes is not None else labels.max().item() + 1)
    preds = []
    for start in range(0, len(test), chunk):
        sim = test[start : start + chunk] @ train.T  # (Q, Ntrain): cosine similarities
        top_sim, top_idx = sim.topk(k, dim=1)  # (Q, k)
        weight = torch.exp(top_sim / temperature) if temperature is not None else torch.ones_like(top_sim)
        votes = torch.zeros(len(top_sim), C)  # (Q, C)
        votes.scatter_add_(1, labels[top_idx], weight)  # score(c) = sum_j w_j [y_j = c]
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds).numpy()


def knn_classify(train_x, train_y, test_x, test_y, k: int = 20, temperature: float | None = 0.07) -> dict:
    """{"accuracy": percent, "k": k} of the weighted k-NN classifier on the test split."""
    num_classes = int(max(np.max(train_y), np.max(test_y))) + 1
    pred = knn_predict(train_x, train_y, test_x, k=k, temperature=temperature, num_classes=num_classes)
    return {"accuracy": 100.0 * float((pred == np.asarray(test_y)).mean()), "k": int(min(k, len(train_x)))}


# ---- the shared few-label protocol ---------------------------------------------------------


def few_label_eval(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                   per_class: int | None = None, fraction: float | None = None, seeds: Iterable[int] = (0,),
                   protocols: Iterable[str] = ("linear", "knn"), k: int = 20, temperature: float | None = 0.07,
                   val: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, list[float]]:
    """The frozen-feature protocol on labelled subsets: {"linear": [accuracy per subset], "knn": [...]}.

    Each seed draws a subset of the training features (`per_class` examples of every class, or a stratified
    `fraction` of the labels; neither = all labels, one subset); the linear probe (C by CV on the subset, its
    folds seeded by the subset's position in `seeds`, or C on `val` when given) and DINO's weighted k-NN (`k`,
    `temperature`) are fitted on it and scored on the test split.
    """
    if per_class is not None and fraction is not None:
        raise ValueError("few_label_eval: give per_class or fraction, not both")
    protocols = tuple(protocols)
    unknown = set(protocols) - {"linear", "knn"}
    if unknown:
        raise ValueError(f"unknown protocols {sorted(unknown)}; use 'linear' and/or 'knn'")
    scores: dict[str, list[float]] = {p: [] for p in protocols}
    for position, seed in enumerate(seeds):
        if per_class is not None:
            idx = few_label_indices(train_y, per_class, seed)
        elif fraction is not None and fraction < 1:
            idx = fraction_indices(train_y, fraction, seed)
        else:
            idx = np.arange(len(train_y))
        x, y = train_x[idx], np.asarray(train_y)[idx]
        if "linear" in protocols:
            scores["linear"].append(linear_probe(x, y, test_x, test_y, seed=position, val=val)["accuracy"])
        if "knn" in protocols:
            scores["knn"].append(knn_classify(x, y, test_x, test_y, k=k, temperature=temperature)["accuracy"])
    return scores


# ---- which features: every layer, two poolings, chosen on validation ----------------------------------------


@torch.no_grad()
def layer_features(backbone: nn.Module, batches: Iterable, device: str | torch.device = "cpu"
                   ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """{"block{l}/{mean|cls}": (N, D) for every block l = 1..L, "final/{mean|cls}": (N, D)}, labels (N,).

    Vision: "block{l}" is the residual stream after block l (no final norm), "final" the backbone's output
    (final norm applied); "mean" averages the patch tokens, "cls" takes the CLS token. Speech ({"waveform",
    "lengths"} batches): every block's output and the final one, mean-pooled over the real frames (no CLS).
    """
    was_training = backbone.training
    backbone.eval()
    feats: dict[str, list[Tensor]] = {}
    labels = []
    try:
        for raw in batches:
            batch = _as_batch(raw)
            if "waveform" in batch:
                (final, blocks), pad = _speech_frames(backbone, batch, device, return_layers="block")
                poolings, pool = ("mean",), functools.partial(_pool_frames, padding=pad)
            elif "images" in batch:
                final, blocks = backbone(batch["images"].to(device), return_layers="block")  # (B, 1 + N, D), L x same
                poolings, pool = POOLINGS, pool_tokens
            else:
                raise ValueError("layer_features reads image or speech batches (`images`, `waveform`); for text use "
                                 "extract_features")
            named = {f"block{i + 1}": b for i, b in enumerate(blocks)}
            named["final"] = final
            for name, tokens in named.items():
                for pooling in poolings:
                    pooled = pool(tokens, pooling).float().cpu().clone()  # clone: no view of (B, T, D)
                    feats.setdefault(f"{name}/{pooling}", []).append(pooled)
            labels.append(torch.as_tensor(batch["labels"]).cpu())
    finally:
        backbone.train(was_training)
    if not labels:
        raise ValueError("layer_features: no batches (is the data set empty?)")
    return {k: torch.cat(v).numpy() for k, v in feats.items()}, torch.cat(labels).numpy()


def choose_features(train_feats: Mapping[str, np.ndarray], train_y: np.ndarray, val_feats: Mapping[str, np.ndarray],
                    val_y: np.ndarray, k: int = 20, temperature: float | None = 0.07, protocol: str = "knn",
                    max_train: int = 5000, seed: int = 0) -> tuple[str, dict[str, float]]:
    """The feature set (a key of `train_feats`) that scores best on the validation split, and every candidate's
    validation accuracy. protocol="knn": DINO's weighted k-NN with the whole training bank; "linear": a logistic
    regression (C = 0.1, standardised features) fitted on at most `max_train` seeded training examples, a cheap
    proxy of the full probe. Ties go to the candidate that comes later in `train_feats` (the deeper layer)."""
    if protocol not in ("knn", "linear"):
        raise ValueError(f"choose_features: unknown protocol {protocol!r}; use 'knn' or 'linear'")
    scores = {}
    subset = np.arange(len(train_y))
    if protocol == "linear" and len(subset) > max_train:
        subset = np.sort(np.random.default_rng(seed).choice(subset, size=max_train, replace=False))
    for name in train_feats:
        if protocol == "knn":
            scores[name] = knn_classify(train_feats[name], train_y, val_feats[name], val_y, k=k,
                                        temperature=temperature)["accuracy"]
        else:
            scores[name] = linear_probe(train_feats[name][subset], np.asarray(train_y)[subset], val_feats[name],
                                        val_y, Cs=(0.1,), seed=seed)["accuracy"]
    best = max(reversed(list(scores)), key=lambda name: scores[name])
    return best, scores


__all__ = [
    "DEFAULT_CS", "POOLINGS", "choose_features", "extract_features", "few_label_eval", "few_label_indices",
    "fraction_indices", "knn_classify", "knn_predict", "layer_features", "linear_probe", "pool_tokens", "standardize",
    "validation_split",
]
