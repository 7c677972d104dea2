"""How hard is a keyword corpus? The speech study's raw-feature floor on the corpus's own VALIDATION split.

    python benchmarks/studies/audio_corpus_floor.py data/spoken-words-study [--window 1.0]

Reads the train and validation keyword splits of a keyword folder or a corpus built by `python -m tasks.audio.corpus`
(every clip cut or zero-padded to --window seconds), computes the hand-made features of `tasks.audio.features`
(40-bin log-mel and 13 MFCCs, each mean+std pooled over time: the study's `features` arm) and scores a
logistic-regression probe (C by 3-fold cross-validation on train) and DINO's weighted k-NN (k 20, T 0.07), trained on
train, scored on validation. For reference it also scores the log-mel averaged over 6 equal time slices (the order of
the sounds kept), the baseline that got every test keyword of the clean corpus right (tasks/audio/README.md).
The test split is never read: this is what chooses a corpus's settings (tasks/audio/README.md records the runs).
Prints one line per feature set and protocol and writes nothing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from data2vec.probe import knn_classify, linear_probe
from tasks.audio import audio_datasets
from tasks.audio.features import clip_features, log_mel
from tasks.audio.waveform import SAMPLE_RATE, fit_length


def load_split(dataset, n: int) -> tuple[torch.Tensor, np.ndarray]:
    """Every clip of a keyword split as (N, n) waveforms and (N,) labels."""
    clips, labels = [], []
    for i in range(len(dataset)):
        x, y = dataset[i]
        clips.append(fit_length(x, n))
        labels.append(int(y))
    return torch.stack(clips), np.asarray(labels)  # (N, n), (N,)


def time_slices(waveform: torch.Tensor, slices: int = 6) -> torch.Tensor:
    """The log-mel averaged over `slices` equal stretches of time, flattened: (N, 40 x slices)."""
    mels = log_mel(waveform)  # (N, 40, F)
    parts = torch.tensor_split(mels, slices, dim=2)  # slices x (N, 40, F / slices)
    return torch.cat([p.mean(dim=2) for p in parts], dim=1)  # (N, 40 x slices)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="a keyword folder or a corpus built by python -m tasks.audio.corpus")
    ap.add_argument("--window", type=float, default=1.0, help="seconds per clip (cut or zero-padded)")
    args = ap.parse_args()
    t0 = time.time()
    splits = audio_datasets(args.data, "keywords")
    n = int(round(args.window * SAMPLE_RATE))
    train_x, train_y = load_split(splits["train"], n)
    val_x, val_y = load_split(splits["validation"], n)
    classes = len(splits["train"].classes)
    print(f"{args.data}: {len(train_y)} train and {len(val_y)} validation clips, {classes} classes "
          f"(chance {100 / classes:.1f} %); loaded in {time.time() - t0:.0f} s")
    train_f, val_f = clip_features(train_x), clip_features(val_x)
    train_f["logmel/6-slices"], val_f["logmel/6-slices"] = time_slices(train_x), time_slices(val_x)
    for name in train_f:
        a, b = train_f[name].numpy(), val_f[name].numpy()
        linear = linear_probe(a, train_y, b, val_y, seed=0)
        knn = knn_classify(a, train_y, b, val_y)["accuracy"]
        print(f"{name:18s} linear {linear['accuracy']:5.1f} % (C {linear['C']:g})   k-NN {knn:5.1f} %")
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
