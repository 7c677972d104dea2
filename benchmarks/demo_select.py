"""The demo's cost choice checked on a validation split: data2vec 2.0's batch, masks per image (M) and updates.

`data2vec demo` pretrains data2vec 2.0 for 1,000 updates of 64 images with M = 2 masks; it used 1,000 x 128 with
M = 4 until it had to fit in two minutes. The cheaper setting was picked among the candidates below as the
cheapest whose table stayed within the label subsets' spread, and that first look used the demo's own test
digits. This script repeats the choice without them: every candidate pretrains through the demo's own code
(`study.digits.pretrain_method`) on 80 % of the demo's training pool, and the demo's protocol (linear probe and
k-NN with 10 and 50 labels per class, 5 label subsets) scores the frozen features on the other 20 % (seeded;
the 359 test digits are never read). The CPU seconds of each pretraining are this process's CPU clock.

Run:  python benchmarks/demo_select.py                 (about 10 CPU-minutes, one thread)
Writes benchmarks/results/demo_select.json (every score, the command, the machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from data2vec.devices import set_threads

RESULTS = Path(__file__).resolve().parent / "results"
# (updates, batch, M): the old default first, the demo's default last
CANDIDATES = ((1000, 128, 4), (1000, 64, 4), (700, 64, 4), (500, 128, 2), (1000, 64, 2))


def validation_split(seed: int = 1234):
    """(fit images, fit labels, validation images, validation labels): a seeded 80 / 20 split of the demo's
    training pool (the split benchmarks/v1_vs_v2.py --select uses)."""
    from data2vec.study.digits import digits_tensors

    train_x, train_y, _, _ = digits_tensors()
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))
    held, kept = order[: len(order) // 5], order[len(order) // 5:]
    return train_x[kept], train_y[kept], train_x[held], train_y[held]


def score_candidate(steps: int, batch: int, masks: int, seed: int, data, workdir: Path, label_seeds: int = 5) -> dict:
    """Pretrain data2vec 2.0 with the demo's code at one setting; the demo's protocol on the validation split."""
    from data2vec.study.digits import DemoConfig, evaluate_features, pooled_features, pretrain_method

    fit_x, fit_y, val_x, val_y = data
    cfg = DemoConfig(steps=steps, batch_size=batch, warmup_steps=max(1, steps // 10), seed=seed,
                     label_seeds=label_seeds, data2vec2_overrides={"num_masks": masks})
    cpu = time.process_time()
    trained = pretrain_method("data2vec2", cfg, fit_x, workdir, quiet=True, plots=False)
    cpu = time.process_time() - cpu
    a, ay = pooled_features(trained["backbone"], fit_x, fit_y)
    b, by = pooled_features(trained["backbone"], val_x, val_y)
    scores = evaluate_features(a, ay, b, by, cfg)
    return {"steps": steps, "batch_size": batch, "num_masks": masks, "seed": seed, "cpu_seconds": cpu,
            "masked_views": steps * batch * masks,
            "validation": {f"{protocol}@{labels}": {"mean": statistics.mean(accs), "std": statistics.pstdev(accs),
                                                     "subsets": accs}
                           for protocol, by_labels in scores.items() for labels, accs in by_labels.items()}}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0, help="the demo's seed (init, masks, data order, label subsets)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads, torch and numpy/scipy (default 1: CPU seconds comparable)")
    p.add_argument("--candidates", default=None,
                   help="updates:batch:M,... (default: the five the demo's choice was made among)")
    p.add_argument("--label-seeds", type=int, default=5, help="random label subsets per budget (the demo's 5)")
    p.add_argument("--out", type=Path, default=RESULTS / "demo_select.json")
    args = p.parse_args(argv)
    set_threads(args.threads)
    candidates = CANDIDATES if args.candidates is None else tuple(
        tuple(int(v) for v in c.split(":")) for c in args.candidates.split(","))
    data = validation_split()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for steps, batch, masks in candidates:
            row = score_candidate(steps, batch, masks, args.seed, data, Path(tmp), args.label_seeds)
            rows.append(row)
            cells = "  ".join(f"{k} {v['mean']:.1f} ± {v['std']:.1f}" for k, v in row["validation"].items())
            print(f"{steps} x {batch}, M = {masks}: {row['cpu_seconds']:.0f} CPU-s; validation {cells}", flush=True)
    from data2vec.precision import cpu_model

    report = {"command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
              "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__},
              "split": "validation: 20 % of the demo's training pool (seed 1234); the test digits unread",
              "fit_images": len(data[0]), "validation_images": len(data[2]),
              "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
