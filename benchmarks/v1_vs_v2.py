"""data2vec v1 against data2vec 2.0 on the demo's digits: frozen-feature accuracy against pretraining time.

The question: does data2vec 2.0 reach v1's final k-NN accuracy in a third of v1's pretraining time
or less? Both methods pretrain the demo's encoder (ViT 4 x 64, 2 x 2 patches on scikit-learn's 8 x 8 digits,
1,438 training images, labels unused) through `data2vec.engine.pretrain`, each with its own schedule over
`--steps` updates. Every `--probe-every` updates the student backbone is scored on frozen, mean-pooled
features: DINO's weighted k-NN (k = 20, T = 0.07) with all training labels on the 359 test digits (the
headline); the same k-NN after subtracting the labelled bank's mean feature from every feature ("centred":
post-LN encoders such as data2vec 2.0's put a large component shared by all images into mean-pooled
features, which dominates a cosine k-NN); and a linear probe on standardised features. The evaluation runs
outside the timed region (the RNG state is saved and restored around it, so the training run is the same as
without it); "seconds" is the sum of the engine's per-update `step_time` (data, forward, backward, optimiser,
EMA), i.e. pretraining compute only.

v1 uses the demo's recipe (`data2vec demo`: lr 5e-3, batch 128, mask ratio 0.4, 1000 updates). v2 uses the
registry's `mini` recipe on the same encoder (inverse block masks with 2 x 2 blocks, conv decoder) with the
settings chosen on a validation split carved from the training images (`--select`, k-NN on it; the test digits
are never used for a choice; results/v1_vs_v2_select.json): lr 2e-3, M = 4 masks, mask ratio 0.5.

Run:  python benchmarks/v1_vs_v2.py --seeds 0 1 2                 (about 20 minutes on 2 CPU cores)
      python benchmarks/v1_vs_v2.py --select --seeds 0            (the v2 choices on a validation split)
Writes benchmarks/results/v1_vs_v2.json (every curve, the command, the machine) and a plot.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data2vec.devices import set_threads

RESULTS = Path(__file__).resolve().parent / "results"


def digits(validation: bool):
    """(train images, train labels, eval images, eval labels), normalised as in the demo. validation=True:
    the eval set is 20 % of the training images (seeded), the test digits are not touched."""
    from data2vec.study.digits import digits_tensors

    train_x, train_y, test_x, test_y = digits_tensors()
    if not validation:
        return train_x, train_y, test_x, test_y
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(1234))
    held, kept = order[: len(order) // 5], order[len(order) // 5:]
    return train_x[kept], train_y[kept], train_x[held], train_y[held]


def build(method: str, seed: int, v2_lr: float, v2_masks: int, steps: int, v2_set: dict | None = None):
    """(the method, its PretrainConfig) on the demo's encoder."""
    from data2vec.engine import PretrainConfig
    from data2vec.methods import METHODS
    from data2vec.study.digits import DemoConfig, build_demo_method, demo_encoder_overrides

    demo = DemoConfig(seed=seed, steps=steps)
    if method == "data2vec":
        model, _ = build_demo_method("data2vec", demo)
        lr, betas, clip = demo.lr, (0.9, 0.999), 3.0
    else:
        torch.manual_seed(seed)
        encoder = {k: v for k, v in demo_encoder_overrides(demo).items() if k != "position"}  # v2: sin-cos positions
        model = METHODS["data2vec2"].build("vision", "mini", **encoder, num_masks=v2_masks, **(v2_set or {}))
        optim = METHODS["data2vec2"].optim["vision"]
        lr, betas, clip = v2_lr, optim.betas, optim.clip_norm
    cfg = PretrainConfig(steps=steps, batch_size=demo.batch_size, lr=lr, min_lr=lr / 100,
                         warmup_steps=max(1, steps // 10), weight_decay=demo.weight_decay, betas=betas,
                         clip_norm=clip, seed=seed, device="cpu", quiet=True, plots=False, log_every=0,
                         health_every=0)  # the study probes itself (below); no health pass, no health guard
    return model, cfg


def score(backbone, train_x, train_y, eval_x, eval_y) -> dict:
    from data2vec.probe import knn_classify, linear_probe
    from data2vec.study.digits import pooled_features

    a, ay = pooled_features(backbone, train_x, train_y)
    b, by = pooled_features(backbone, eval_x, eval_y)
    centre = a.mean(axis=0, keepdims=True)  # the labelled bank's mean feature (no eval statistics used)
    return {"knn": knn_classify(a, ay, b, by, k=20, temperature=0.07)["accuracy"],
            "knn_centred": knn_classify(a - centre, ay, b - centre, by, k=20, temperature=0.07)["accuracy"],
            "linear": linear_probe(a, ay, b, by, seed=0)["accuracy"]}


def run(method: str, seed: int, steps: int, probe_every: int, data, v2_lr: float, v2_masks: int, out: Path,
        v2_set: dict | None = None) -> dict:
    """One pretraining run with a probe every `probe_every` updates; returns its curve."""
    from data2vec.checkpoint import preserved_rng
    from data2vec.engine import pretrain, read_metrics
    from data2vec.study.digits import DigitImages

    train_x, train_y, eval_x, eval_y = data
    model, cfg = build(method, seed, v2_lr, v2_masks, steps, v2_set)
    curve = [{"step": 0, **score(model.backbone, train_x, train_y, eval_x, eval_y)}]
    original_hook = model.step_hook

    def hook_then_probe(step: int, total_steps: int) -> dict:
        values = original_hook(step, total_steps)
        if (step + 1) % probe_every == 0 or step + 1 == total_steps:
            model.eval()
            with preserved_rng(), torch.no_grad():
                curve.append({"step": step + 1, **score(model.backbone, train_x, train_y, eval_x, eval_y)})
            model.train()
        return values

    model.step_hook = hook_then_probe  # the engine calls it right after each optimiser step
    pretrain(model, DigitImages(train_x), cfg, out, run_config={"study": "v1_vs_v2", "method": method})
    step_times = [r["step_time"] for r in read_metrics(out / "metrics.jsonl")]
    elapsed = np.cumsum([0.0] + step_times)  # elapsed[k] = seconds spent on the first k updates
    for point in curve:
        point["seconds"] = float(elapsed[point["step"]])
    return {"method": method, "seed": seed, "steps": steps, "seconds": float(elapsed[-1]), "lr": cfg.lr,
            "num_masks": v2_masks if method == "data2vec2" else 1,
            "overrides": (v2_set or {}) if method == "data2vec2" else {}, "curve": curve}


def time_to_reach(curve: list[dict], accuracy: float) -> float | None:
    """Seconds until the k-NN accuracy first reaches `accuracy` (None if it never does)."""
    return next((p["seconds"] for p in curve if p["knn"] >= accuracy), None)


def plot(runs: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.8), tight_layout=True)
    ax = fig.add_subplot()
    for method, colour in (("data2vec", "tab:blue"), ("data2vec2", "tab:orange")):
        for i, r in enumerate(x for x in runs if x["method"] == method):
            ax.plot([p["seconds"] for p in r["curve"]], [p["knn"] for p in r["curve"]], color=colour, alpha=0.8,
                    label=("data2vec v1" if method == "data2vec" else "data2vec 2.0") if i == 0 else None)
    ax.set_xlabel("pretraining time (s, sum of update times, 2 CPU threads)")
    ax.set_ylabel("k-NN test accuracy (%)")
    ax.set_title("digits: frozen features vs pretraining time (one line per seed)")
    ax.legend()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--v1-steps", type=int, default=1000, help="v1 updates (the demo's 1000)")
    p.add_argument("--v2-steps", type=int, default=None, help="v2 updates (default: as many as v1 has)")
    p.add_argument("--v2-lr", type=float, default=2e-3,
                   help="v2 peak learning rate at batch 128 (chosen on validation: results/v1_vs_v2_select.json)")
    p.add_argument("--v2-masks", type=int, default=4, help="v2 masks per image (released: 16; chosen on validation: 4)")
    p.add_argument("--v2-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a Data2Vec2Config field for the v2 runs, e.g. --v2-set mask_ratio=0.6 (values parsed as JSON)")
    p.add_argument("--probe-every", type=int, default=50)
    p.add_argument("--select", action="store_true", help="score on a validation split of the training images")
    p.add_argument("--methods", nargs="+", default=["data2vec", "data2vec2"])
    p.add_argument("--threads", type=int, default=2,
                   help="CPU threads, torch and numpy/scipy (the measured results: 2)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    v2_set = {"mask_ratio": 0.5}  # chosen on the validation split (released: 0.8; 3 of 16 patches kept on 4 x 4)
    v2_set.update({k: json.loads(v) for k, _, v in (item.partition("=") for item in args.v2_set)})
    set_threads(args.threads)
    data = digits(validation=args.select)
    runs = []
    with tempfile.TemporaryDirectory(prefix="v1v2-") as tmp:
        for seed in args.seeds:
            for method in args.methods:
                steps = args.v1_steps if method == "data2vec" else (args.v2_steps or args.v1_steps)
                t0 = time.time()
                r = run(method, seed, steps, args.probe_every, data, args.v2_lr, args.v2_masks,
                        Path(tmp) / f"{method}-{seed}", v2_set)
                print(f"{method:9s} seed {seed}: {steps} updates, {r['seconds']:.0f} s pretraining "
                      f"({time.time() - t0:.0f} s with probes), final k-NN {r['curve'][-1]['knn']:.1f} %, "
                      f"centred {r['curve'][-1]['knn_centred']:.1f} %, linear {r['curve'][-1]['linear']:.1f} %",
                      flush=True)
                runs.append(r)
    summary = {}
    for method in args.methods:
        mine = [r for r in runs if r["method"] == method]
        finals = [r["curve"][-1]["knn"] for r in mine]
        summary[method] = {"final_knn_mean": statistics.mean(finals),
                           "final_knn_std": statistics.pstdev(finals) if len(finals) > 1 else 0.0,
                           "final_knn_centred_mean": statistics.mean(r["curve"][-1]["knn_centred"] for r in mine),
                           "final_linear_mean": statistics.mean(r["curve"][-1]["linear"] for r in mine),
                           "seconds_mean": statistics.mean(r["seconds"] for r in mine)}
    if {"data2vec", "data2vec2"} <= set(args.methods):
        ratios = []
        for seed in args.seeds:
            v1 = next(r for r in runs if r["method"] == "data2vec" and r["seed"] == seed)
            v2 = next(r for r in runs if r["method"] == "data2vec2" and r["seed"] == seed)
            reached = time_to_reach(v2["curve"], v1["curve"][-1]["knn"])
            ratios.append(None if reached is None else reached / v1["seconds"])
        summary["v2_time_to_v1_final_knn_over_v1_time"] = ratios
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    report = {"command": "python benchmarks/v1_vs_v2.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "git_commit": commit, "split": "validation (20 % of train)" if args.select else "test digits",
              "machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine()},
              "summary": summary, "runs": runs}
    out = args.out or RESULTS / ("v1_vs_v2_select.json" if args.select else "v1_vs_v2.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot(runs, out.with_suffix(".png"))
    print(json.dumps(summary, indent=2))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return report


if __name__ == "__main__":
    main()
