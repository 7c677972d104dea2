"""`data2vec demo`: pretrain data2vec 2.0 on real images that ship with scikit-learn and show what it learned.

What it does (no download, no arguments, a few minutes on 2 CPU cores)
1. Data: scikit-learn's handwritten digits (1,797 grey 8 x 8 images, 10 classes), split by
   `tasks.vision.load_digits_dataset` into a 1,438-image train pool and a 359-image test set (seeded,
   stratified). Pretraining sees only the train pool's images, never a label.
2. Pretraining: data2vec 2.0 (docs/design.md section 5, at reduced scale, section 8) on a small pre-LN ViT:
   8 x 8 images cut into 2 x 2 patches (a 4 x 4 grid), width 64, 4 blocks, fixed sin-cos positions; M = 2
   inverse-block masks of ratio 0.5 per image; targets = average of the teacher's top 3 block outputs,
   each instance-normed; 1,000 updates of 64 images, lr 2e-3, in the precision --precision picks (bf16 on a CPU
   with bf16 units). It is the default because it beat data2vec v1 in
   every protocol of the equal-budget studies on digits and CIFAR-10 (benchmarks/studies/README.md).
   `--method data2vec` shows v1 instead (section 4: learned absolute positions, 40% of the patches masked in
   blocks, targets = average of the teacher's top 3 block outputs, each layer-normed; lr 5e-3).
   The loop is `engine.pretrain`, which writes metrics.jsonl, plots and a checkpoint per method.
   Optional (`--baselines`): the other methods (DINO, docs/design.md section 6; the other data2vec) on the same
   encoder and data, each for the same number of updates (not the same time: see `data2vec compare`).
3. Evaluation of frozen features, few labels: for L labels per class (10 and 50) and several random
   label subsets, a linear probe (logistic regression, L2 strength chosen by cross-validation on the
   labelled subset only) and DINO's weighted k-NN (k = 20, T = 0.07) on mean-pooled patch features;
   scored on the test set. The same protocol runs on a randomly initialised encoder of the same
   architecture (the floor pretraining must beat) and, as a reference, on the raw pixels.
4. Output: a results table (mean ± std over label subsets), `results.json`, `plots/` (pretraining
   loss curves, accuracy vs. labels per class) in `--out` (default runs/demo; runs/demo-quick with `--quick`).
   A folder that already holds a demo's results is refused unless `--overwrite`.

Every number printed comes from this run. `--quick` is a ~30 s version (fewer steps, fewer subsets)
used by the tests; its numbers are not meaningful. It writes to its own folder by default, so a smoke run
never replaces the full demo's results or its checkpoint (runs/demo/pretrain-data2vec2).

Differences from the papers' recipes (why): data2vec 2.0 uses 2 masks instead of 16 (for time: a demo under two
minutes) and a 0.5 mask ratio instead of 0.8 on the 4 x 4 grid (chosen on a validation split of the training
digits, benchmarks/results/v1_vs_v2_select.json). data2vec v1 uses absolute learned positions instead of BEiT's relative
bias and a 40% mask instead of 60% (on a 4 x 4 patch grid both measured better in a sweep of this demo: linear
probe with 50 labels/class 89% vs 63-68% after 600 updates). No augmentation besides masking; 1,000 updates.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from ..study.digits import (
    DEMO_RECIPES,
    DemoConfig,
    digits_tensors,
    evaluate_features,
    pooled_features,
    pretrain_method,
)
from ..study.errors import StudyInterrupted
from .errors import OVERWRITE_HELP, CliError, HelpFormatter, Interrupted
from .flags import add_device_and_threads, apply_threads, resolve_precision

# ---- report ----------------------------------------------------------------------------------------------


def _cell(values: list[float]) -> str:
    return f"{np.mean(values):5.1f} ± {np.std(values):3.1f}"


def format_demo_table(rows: dict[str, dict], budgets) -> str:
    cols = [(p, b) for b in budgets for p in ("linear", "knn")]
    head = f"{'features':27s}" + "".join(f"{p + ' @' + str(b) + '/class':>18s}" for p, b in cols)
    lines = [head, "-" * len(head)]
    for name, res in rows.items():
        lines.append(f"{name:27s}" + "".join(f"{_cell(res[p][b]):>18s}" for p, b in cols))
    return "\n".join(lines)


def write_demo_plots(out: Path, rows: dict[str, dict], curves: dict[str, list[dict]], budgets) -> list[Path]:
    from matplotlib.figure import Figure

    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    written = []
    fig = Figure(figsize=(6, 3.5), tight_layout=True)
    ax = fig.add_subplot()
    for name, records in curves.items():
        pts = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
    ax.set_xlabel("update")
    ax.set_ylabel("pretraining loss")
    ax.set_yscale("log")
    ax.set_title("pretraining loss on digits (each method's own objective)")
    ax.legend()
    fig.savefig(plots / "pretrain_loss.png", dpi=100)
    written.append(plots / "pretrain_loss.png")
    fig = Figure(figsize=(9, 3.5), tight_layout=True)
    for i, protocol in enumerate(("linear", "knn")):
        ax = fig.add_subplot(1, 2, i + 1)
        for name, res in rows.items():
            means = [np.mean(res[protocol][b]) for b in budgets]
            stds = [np.std(res[protocol][b]) for b in budgets]
            ax.errorbar(list(budgets), means, yerr=stds, marker="o", capsize=3, label=name)
        ax.set_xticks(list(budgets), [str(b) for b in budgets])
        ax.set_xlabel("labels per class")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("linear probe" if protocol == "linear" else "weighted k-NN")
        ax.legend(fontsize=7)
    fig.savefig(plots / "accuracy_vs_labels.png", dpi=100)
    written.append(plots / "accuracy_vs_labels.png")
    return written


# ---- the command ---------------------------------------------------------------------------------------


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="pretrain data2vec 2.0 on scikit-learn's digits and compare its frozen features with a random encoder "
        "(a few minutes on a CPU, no download)",
        description="Pretrain data2vec 2.0 (or v1, optionally DINO) on the 8x8 digits that ship with scikit-learn, "
        "then score "
        "frozen features with a linear probe and k-NN using 10 and 50 labels per class, against a randomly "
        "initialised encoder of the same architecture and raw pixels. Prints a table, writes results.json and "
        "plots/ in --out.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--out", default=None,
                   help="output folder: results.json, plots/, one run folder per method (default runs/demo, with "
                   "--quick runs/demo-quick); one that holds a demo's results is refused unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--quick", action="store_true",
                   help="a ~30 s smoke version (20 updates, 2 label subsets): checks the pipeline, numbers not "
                   "meaningful; writes to runs/demo-quick unless --out, so the full demo's results stay")
    p.add_argument("--steps", type=int, default=None,
                   help="pretraining updates (default 1000). More steps keep improving the features; the teacher's "
                   "EMA ramp and the lr schedule scale with it")
    p.add_argument("--method", default=DemoConfig.method, choices=["data2vec2", "data2vec"],
                   help="the method shown: data2vec2 (data2vec 2.0, the default: it beat v1 in every protocol of the "
                   "equal-budget digits and CIFAR-10 studies) or data2vec (v1)")
    p.add_argument("--baselines", default="",
                   help="comma-separated extra methods pretrained on the same encoder for the same number of updates: "
                   "'dino' (adds about a minute), 'data2vec' (v1, about three minutes), 'data2vec2'")
    p.add_argument("--label-seeds", type=int, default=None, help="random label subsets per budget (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, masks, data order and label subsets")
    add_device_and_threads(p)
    from ..precision import PRECISION_HELP, PRECISIONS

    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .common import choose_device, prepare_run_dir, removed_on_failure

    t_start = time.time()
    args.device = choose_device(args.device)
    apply_threads(args.threads)
    overrides = {"seed": args.seed}
    if args.steps is not None:
        if args.steps < 2:
            raise CliError(f"--steps must be >= 2, got {args.steps}; fix: use e.g. 1000")
        overrides.update(steps=args.steps, warmup_steps=max(1, args.steps // 10))
    if args.label_seeds is not None:
        if args.label_seeds < 1:
            raise CliError(f"--label-seeds must be >= 1, got {args.label_seeds}; fix: e.g. 5 (the default)")
        overrides["label_seeds"] = args.label_seeds
    baselines = tuple(b.strip().lower() for b in args.baselines.split(",") if b.strip())
    others = [name for name in DEMO_RECIPES if name != args.method]
    for b in baselines:
        if b not in others:
            reason = "is already the --method" if b == args.method else "is not a demo method"
            raise CliError(f"--baselines: {b!r} {reason}; fix: use {', '.join(map(repr, others))} or leave it out")
    overrides.update(method=args.method, baselines=baselines)
    cfg = DemoConfig.quick(**overrides) if args.quick else DemoConfig(**overrides)
    out = Path(args.out or ("runs/demo-quick" if args.quick else "runs/demo"))  # a smoke run never replaces the demo
    with removed_on_failure(out, "demo"):  # a launch that fails before pretraining leaves no folder behind
        prepare_run_dir(out, "demo", overwrite=args.overwrite)
        try:
            return _demo(args, cfg, out, t_start)
        except StudyInterrupted as error:  # Ctrl-C / SIGTERM while pretraining: the exit status of the signal
            raise Interrupted(str(error), error.signal_name) from None


def _demo(args: argparse.Namespace, cfg: DemoConfig, out: Path, t_start: float) -> int:
    """Pretrain, evaluate the frozen features, print the table and write the results into `out`."""
    import torch

    device = args.device
    train_x, train_y, test_x, test_y = digits_tensors()
    print(f"data2vec demo: scikit-learn digits, {len(train_x)} unlabeled training images (8x8, grey), "
          f"{len(test_x)} test images")
    print(f"encoder: ViT {cfg.depth} blocks x {cfg.dim} wide, {cfg.patch_size}x{cfg.patch_size} patches "
          f"({(8 // cfg.patch_size) ** 2} tokens + CLS); device {device}, torch threads: {torch.get_num_threads()}")
    print("pretraining (labels unused):", flush=True)
    precision = resolve_precision(args, device)
    trained = {name: pretrain_method(name, cfg, train_x, out, quiet=False, device=device, bf16=precision.bf16)
               for name in (cfg.method,) + cfg.baselines}

    print("evaluating frozen features (mean-pooled patch tokens):", flush=True)
    from ..backbone import build_backbone

    torch.manual_seed(cfg.seed)
    random_encoder = build_backbone(trained[cfg.method]["backbone"].cfg)  # the shown method's encoder, untrained
    ytr, yte = train_y.numpy(), test_y.numpy()
    rows: dict[str, dict] = {}
    t_eval = time.time()
    encoders = [("random init (no training)", random_encoder)] + [(n, t["backbone"]) for n, t in trained.items()]
    for name, model in encoders:
        fx_train, _ = pooled_features(model, train_x, train_y, device)
        fx_test, _ = pooled_features(model, test_x, test_y, device)
        rows[name] = evaluate_features(fx_train, ytr, fx_test, yte, cfg)
    rows["raw pixels (reference)"] = evaluate_features(train_x.flatten(1).numpy(), ytr, test_x.flatten(1).numpy(),
                                                       yte, cfg)
    eval_seconds = time.time() - t_eval

    table = format_demo_table(rows, cfg.label_budgets)
    print()
    print(f"test accuracy (%) on {len(test_x)} digits, mean ± std over {cfg.label_seeds} random label subsets")
    print(table)
    plots = write_demo_plots(out, rows, {n: t["metrics"] for n, t in trained.items()}, cfg.label_budgets)
    elapsed = time.time() - t_start
    results = {
        "config": dataclasses.asdict(cfg),
        "quick": bool(args.quick),
        "data": {"train_images": len(train_x), "test_images": len(test_x), "source": "sklearn.datasets.load_digits"},
        "protocol": {"features": "mean of patch tokens (final norm applied)",
                     "linear": "logistic regression, C by 3-fold CV on the labelled subset",
                     "knn": f"weighted k-NN, k={cfg.knn_k}, T={cfg.knn_temperature}"},
        "pretraining": {n: {"seconds": round(t["seconds"], 2), "final_loss": t["final_loss"], "run_dir": t["run_dir"]}
                        for n, t in trained.items()},
        "results": {name: {p: {str(b): {"mean": float(np.mean(v)), "std": float(np.std(v)), "runs": v}
                               for b, v in res[p].items()} for p in res} for name, res in rows.items()},
        "eval_seconds": round(eval_seconds, 2),
        "wall_time_s": round(elapsed, 2),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "precision": precision.name,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.txt").write_text(table + "\n")
    print()
    print(f"wrote {out / 'results.json'}, {out / 'results.txt'}, " + ", ".join(str(p) for p in plots))
    print(f"total time {elapsed:.0f} s (pretraining {sum(t['seconds'] for t in trained.values()):.0f} s, "
          f"evaluation {eval_seconds:.0f} s)")
    return 0
