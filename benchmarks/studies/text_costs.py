"""Seconds per pretraining update of the text comparison's arms, and of data2vec 2.0 variants, on this machine.

The text comparison (`data2vec compare --modality text`) fixes each arm's update count from a calibration like
this one; this script times variants that the comparison does not run, so a recipe can be priced before it is
tried: the shared 4 x 256 encoder, blocks of 128 tokens of the study corpus, one CPU thread, the median CPU
seconds of 6 updates after 2 untimed ones.

    python -m tasks.text.study_corpus --data ../shared/data --out runs/text-corpus    # once, ~15 s
    python benchmarks/studies/text_costs.py bert data2vec "data2vec2 M=8" "data2vec2 M=2 decoder=2"

A variant is `NAME` (the comparison's recipe) or `data2vec2 M=<masks> decoder=<conv layers> batch=<blocks>`
(any subset of the three). Each costs about 10 updates of that arm.
"""

from __future__ import annotations

import argparse
import shutil

import numpy as np
import torch

from data2vec.checkpoint import set_seed
from data2vec.engine import pretrain, read_metrics
from data2vec.study.budget import Recipe, pretrain_config
from data2vec.study.text import build_arm, load_corpus
from data2vec.study.text_config import TEXT_STUDY_RECIPES, TextCompareConfig

FIELDS = {"M": "num_masks", "decoder": "decoder_layers"}


def parse_variant(text: str) -> tuple[str, dict, int | None]:
    """'data2vec2 M=2 decoder=2 batch=32' -> ('data2vec2', {'num_masks': 2, 'decoder_layers': 2}, 32)."""
    name, *settings = text.split()
    overrides, batch = {}, None
    for setting in settings:
        key, _, value = setting.partition("=")
        if key == "batch":
            batch = int(value)
        elif key in FIELDS:
            overrides[FIELDS[key]] = int(value)
        else:
            raise SystemExit(f"unknown setting {setting!r} in {text!r}; use M=, decoder= or batch=")
    return name, overrides, batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("variants", nargs="+", help='e.g. bert data2vec "data2vec2 M=2 decoder=2"')
    p.add_argument("--corpus", default="runs/text-corpus", help="the study corpus folder (corpus.txt, tokenizer/)")
    p.add_argument("--runs", default="runs/text-costs", help="scratch run folders")
    args = p.parse_args()
    torch.set_num_threads(1)
    base = TextCompareConfig(data=f"{args.corpus}/corpus.txt", tokenizer=f"{args.corpus}/tokenizer", glue="",
                               out=args.runs, runs=args.runs, threads=1)
    dataset, tok = load_corpus(base)
    for text in args.variants:
        name, overrides, batch = parse_variant(text)
        TEXT_STUDY_RECIPES[name] = Recipe(overrides={**TEXT_STUDY_RECIPES.get(name, Recipe()).overrides, **overrides})
        cfg = TextCompareConfig(**{**base.__dict__, "batch_size": batch or base.batch_size})
        set_seed(0)
        method, optim, spec = build_arm(cfg, name, tok)
        run = f"{args.runs}/{'_'.join(text.split())}"
        shutil.rmtree(run, ignore_errors=True)
        pretrain(method, dataset, pretrain_config(cfg, optim, 8, 0, spec, plots=False, health_every=0,
                                                  warmup_steps=1), run)
        seconds = [r["step_cpu_time"] for r in read_metrics(f"{run}/metrics.jsonl")][2:]
        print(f"{text}: {np.median(seconds):.2f} CPU s per update of {cfg.batch_size} x {cfg.seq_len} tokens",
              flush=True)


if __name__ == "__main__":
    main()
