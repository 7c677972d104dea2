"""Seeded, stratified label subsets: the labelled examples a protocol may use, and its validation split.

What it implements
- `few_label_indices(labels, per_class, seed)`: N labelled examples of every class (the few-label
  protocol of `data2vec probe` / `demo`: L = 10 images per class and the like).
- `fraction_indices(labels, fraction, seed)`: a stratified `fraction` of every class (rounded, at least one
  example each), the "1% / 10% of the labels" of the semi-supervised protocols (SimCLR, BYOL, MSN).
- `validation_split(labels, fraction, seed, max_examples)`: (train_idx, val_idx), a stratified validation
  split carved from the training data for the choices a protocol makes (features, C, the fine-tuning epoch),
  so that the test split is scored once and chooses nothing.

Every draw is a function of (labels, seed) alone (`numpy.random.default_rng(seed)`), and indices come back
sorted. `data2vec.probe` imports these (its few-label protocol draws its subsets here) and keeps them
importable under its own name.

Differences from the originals
- SimCLR / BYOL take the 1% / 10% ImageNet subsets from fixed published lists; we draw a stratified seeded
  subset of any labelled set instead (the same fraction of every class).
"""

from __future__ import annotations

import numpy as np


def few_label_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of `per_class` examples of every class (all of a class if it has fewer), drawn with `seed`."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picked.append(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
    return np.sort(np.concatenate(picked))


def fraction_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified, seeded subset holding `fraction` of every class (rounded, at least one example each):
    the "1% / 10% of the labels" of the semi-supervised protocols (SimCLR, BYOL, MSN)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}; fix: e.g. 0.01 for 1% of the labels")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = max(1, int(round(fraction * len(idx))))
        picked.append(rng.choice(idx, size=n, replace=False))
    return np.sort(np.concatenate(picked))


def validation_split(labels: np.ndarray, fraction: float, seed: int, max_examples: int | None = None):
    """(train_idx, val_idx): a stratified, seeded validation split carved from the training data (at most
    `max_examples` of it), for the choices a protocol makes (features, C, the fine-tuning epoch), never the test
    split."""
    val = fraction_indices(labels, fraction, seed)
    if max_examples is not None and len(val) > max_examples:
        val = np.sort(np.random.default_rng(seed + 1).choice(val, size=max_examples, replace=False))
    keep = np.ones(len(labels), dtype=bool)  # True = stays in the training part
    keep[val] = False
    return np.flatnonzero(keep), val


__all__ = ["few_label_indices", "fraction_indices", "validation_split"]
