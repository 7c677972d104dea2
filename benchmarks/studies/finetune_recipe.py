"""How much of the few-label fine-tuning floor is the recipe: the comparison's fine-tuning run with one change.

`data2vec compare` fine-tunes every arm with one recipe (AdamW, lr 1e-3, layer decay 0.75, cosine, warm-up 10 %,
label smoothing 0.1, the training augmentation, BEiT-style; `evaluate_finetune`). On MNIST, random init fine-tuned
with 1 % of the labels scored far below a linear probe on the same frozen random features with the same labels,
which says the recipe, not the encoder, limits that cell. This script reruns `vision_protocols.finetune_run` on
random init of the study's encoder, or on a pretrained arm's run folder (--init), with the study's labelled subset
and epochs (seed 1) and one change at a time and prints the accuracy on the comparison's selection split (2,000
seeded validation images carved from the training set) at the epoch it selects, the last epoch's, and the final
training loss. The test split is never read: `finetune_run` scores it for the comparison, and this script does not
print or store it.

    python benchmarks/studies/finetune_recipe.py --data ../shared/data/mnist --fraction 0.01 \
        --variants 'lr=1e-3,layer_decay=0.75' 'lr=1e-3,layer_decay=none' 'lr=3e-3,layer_decay=none'

Each run at 1 % of MNIST costs about 2 minutes of one core. Results go to --out (JSON) and the terminal.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from data2vec.backbone import build_backbone
from data2vec.checkpoint import set_seed
from data2vec.config import get_preset
from data2vec.hub import load_pretrained
from data2vec.study import vision_protocols as P
from data2vec.study.vision import data_image_size, image_encoder_overrides
from data2vec.study.vision_config import CompareConfig


def parse_variant(text: str) -> dict:
    """'lr=3e-3,layer_decay=none' -> {'lr': 0.003, 'layer_decay': None} (the keys `finetune_run` takes)."""
    out = {}
    for item in text.split(","):
        key, value = item.split("=")
        if key not in ("lr", "layer_decay"):
            raise SystemExit(f"unknown recipe key {key!r}: use lr or layer_decay")
        out[key] = None if value.lower() == "none" else float(value)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the study's --data (e.g. ../shared/data/mnist)")
    p.add_argument("--fraction", type=float, default=0.01, help="labelled fraction of the fit split (the study's 1 %%)")
    p.add_argument("--variants", nargs="+", default=["lr=1e-3,layer_decay=0.75"],
                   help="recipes to run, each 'lr=X,layer_decay=Y|none' (the study's: lr=1e-3,layer_decay=0.75)")
    p.add_argument("--seed", type=int, default=1, help="random init and labelled subset seed (the study's seed 1)")
    p.add_argument("--init", default=None,
                   help="a pretrained arm's run folder (e.g. runs/studies/mnist/data2vec-seed1) instead of random init")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/finetune-recipe", help="folder for results.json and the run folders")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    cfg = CompareConfig(data=args.data, out=args.out, runs=args.out)  # the study's encoder and protocol defaults
    size = data_image_size(cfg)
    data = P.load_eval_data(cfg, size)
    epochs = P.finetune_epochs(cfg, data, args.fraction)
    results = []
    for text in args.variants:
        recipe = parse_variant(text)
        set_seed(args.seed)  # the same random init as the study's random arm of this seed (and the same head init)
        backbone = build_backbone(get_preset("vision", cfg.preset, **image_encoder_overrides(cfg, size, data.in_chans)))
        if args.init:
            backbone = load_pretrained(args.init).backbone
        t0 = time.time()
        arm = Path(args.init).name.rsplit("-seed", 1)[0] if args.init else "random"
        out = P.finetune_run(cfg, arm, args.seed, backbone, data, args.fraction, epochs, recipe)
        s = out["summary"]
        last = s["history"][-1]
        row = {"variant": text, "init": args.init or "random", "recipe": recipe, "labelled": out["labelled"],
               "epochs": epochs,
               "validation_selected": s["best"]["accuracy"], "selected_epoch": s["best"]["epoch"],
               "validation_last": last["accuracy"], "final_train_loss": last["train_loss"],
               "cpu_seconds": out["cpu_seconds"], "wall_seconds": time.time() - t0}
        results.append(row)
        print(f"{text:32s} validation {row['validation_selected']:.2f} % (epoch {row['selected_epoch']}), last "
              f"{row['validation_last']:.2f} %, train loss {row['final_train_loss']:.3f}, {row['cpu_seconds']:.0f} "
              "CPU-s", flush=True)
    report = {"data": args.data, "init": args.init or "random", "fraction": args.fraction, "seed": args.seed,
              "results": results}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
