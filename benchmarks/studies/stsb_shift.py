"""Why the text study's STS-B scores on its carved validation split sit far above GLUE dev.

The text comparison (`data2vec compare --modality text`) chooses the fine-tuning epoch on 10 % of STS-B's
training pairs and reports GLUE dev. On seed 1 every arm scored a Pearson of ~37 on the carved split and ~17
on dev. This script asks whether the two splits differ in ways a weak model can exploit, with predictors that
need no training beyond a per-genre mean on the fitting part of train:

- word overlap (Jaccard of the lower-cased word sets), the classic lexical baseline of STS;
- total length of the pair in words (a cue a small encoder picks up from its padding mask alone);
- the genre mean: the fitting split's mean score of the pair's genre (news, captions, forum).

The carved split is the comparison's own (`carve_validation`, same fraction and cap), so the numbers describe
the very split the study selected epochs on.

    python benchmarks/studies/stsb_shift.py --glue ../shared/data/glue      # ~5 s
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr

from data2vec.study.glue import carve_validation
from data2vec.study.text_config import TextCompareConfig
from tasks.text import glue

GENRE = {"main-news": "news", "main-captions": "captions", "main-forum": "forum", "main-forums": "forum"}


def genres(path: Path) -> np.ndarray:
    """The `genre` column of an STS-B tsv; dev spells forum 'main-forums', train 'main-forum'."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows)
        column = header.index("genre")
        return np.asarray([GENRE[row[column]] for row in rows])


def jaccard(example) -> float:
    a, b = set(example.text_a.lower().split()), set(example.text_b.lower().split())
    return len(a & b) / max(1, len(a | b))


def pair_length(example) -> int:
    return len(example.text_a.split()) + len(example.text_b.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glue", default="../shared/data/glue", help="GLUE folder holding STS-B/")
    args = parser.parse_args()
    folder = Path(args.glue) / "STS-B"
    train, dev = glue.load_glue("stsb", "train", args.glue), glue.load_glue("stsb", "dev", args.glue)
    train_genre, dev_genre = genres(folder / "train.tsv"), genres(folder / "dev.tsv")
    if len(train_genre) != len(train) or len(dev_genre) != len(dev):
        raise SystemExit(f"{folder}: genre column and loaded examples disagree in length; is this GLUE's STS-B?")
    defaults = TextCompareConfig.__dataclass_fields__
    labels = np.asarray([ex.label for ex in train])
    fit, val = carve_validation(labels, True, defaults["val_fraction"].default, defaults["val_max"].default)
    genre_mean = {g: labels[fit][train_genre[fit] == g].mean() for g in np.unique(train_genre)}

    splits = {"fit (train minus carved)": ([train[i] for i in fit], train_genre[fit]),
              "carved validation": ([train[i] for i in val], train_genre[val]),
              "GLUE dev (reported)": (dev, dev_genre)}
    print("| split | pairs | news / captions / forum | mean score per genre (news / captions / forum) "
          "| Pearson: word overlap | total length | genre mean |")
    print("|---|---|---|---|---|---|---|")
    for name, (rows, genre) in splits.items():
        y = np.asarray([ex.label for ex in rows])
        share = " / ".join(f"{np.mean(genre == g):.0%}" for g in ("news", "captions", "forum"))
        means = " / ".join(f"{y[genre == g].mean():.2f}" for g in ("news", "captions", "forum"))
        r_overlap = pearsonr([jaccard(ex) for ex in rows], y)[0]
        r_length = pearsonr([pair_length(ex) for ex in rows], y)[0]
        r_genre = pearsonr([genre_mean[g] for g in genre], y)[0]
        print(f"| {name} | {len(rows)} | {share} | {means} | {100 * r_overlap:.1f} | {100 * r_length:.1f} "
              f"| {100 * r_genre:.1f} |")


if __name__ == "__main__":
    main()
