"""`data2vec demo`: pretrain data2vec 2.0 on real images that ship with scikit-learn and show what it learned.

What it does (no download, no arguments, a few minutes on 2 CPU cores)
1. Data: scikit-learn's handwritten digits (1,797 grey 8 x 8 images, 10 classes), split by
   `tasks.vision.load_digits_dataset` into a 1,438-image train pool and a 359-image test set (seeded,
   stratified). Pretraining sees only the train pool's images, never a label.
2. Pretraining: data2vec 2.0 (docs/design.md section 5, at reduced scale, section 8) on a small pre-LN ViT:
   8 x 8 images cut into 2 x 2 patches (a 4 x 4 grid), width 64, 4 blocks, fixed sin-cos positions; M = 4
   inverse-block masks of ratio 0.5 per image; targets = average of the teacher's top 3 block outputs,
   each instance-normed; 1,000 updates of 128 images, lr 2e-3. It is the default because it beat data2vec v1 in
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

Differences from the papers' recipes (why): data2vec 2.0 uses 4 masks instead of 16 and a 0.5 mask ratio
instead of 0.8 on the 4 x 4 grid (chosen on a validation split of the training digits,
benchmarks/results/v1_vs_v2_select.json). data2vec v1 uses absolute learned positions instead of BEiT's relative
bias and a 40% mask instead of 60% (on a 4 x 4 patch grid both measured better in a sweep of this demo: linear
probe with 50 labels/class 89% vs 63-68% after 600 updates). No augmentation besides masking; 1,000 updates.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import OVERWRITE_HELP, CliError, HelpFormatter, Interrupted
from .flags import add_device_and_threads, apply_threads


@dataclass
class DemoConfig:
    """The demo's settings; defaults finish in about 4 minutes on 2 CPU cores (measured 3 min 52 s)."""

    method: str = "data2vec2"  # the method shown; "data2vec" for v1 (v2 won every protocol of the digits study)
    steps: int = 1000  # updates of every method (about 89 passes over the 1,438 training images at batch 128)
    batch_size: int = 128  # images per update
    lr: float = 5e-3  # data2vec v1's peak lr; swept on this demo: 2e-3 < 5e-3 (data2vec-vision: 2e-3 at batch 2048)
    warmup_steps: int = 100  # 10% of the run
    weight_decay: float = 0.05  # data2vec-vision
    dim: int = 64  # encoder width
    depth: int = 4  # blocks
    heads: int = 4  # attention heads (16-wide)
    patch_size: int = 2  # 8 x 8 digits -> a 4 x 4 grid of 2 x 2 patches
    position: str = "learned"  # absolute learned positions (ViT); on a 4 x 4 grid they beat BEiT's relative bias
    mask_ratio: float = 0.4  # v1: 6 of 16 patches masked in blocks; swept: 0.4 > 0.6 on this tiny grid
    label_budgets: tuple[int, ...] = (10, 50)  # labelled images per class for the probes
    label_seeds: int = 5  # random label subsets per budget (mean ± std over them)
    knn_k: int = 20  # DINO's k
    knn_temperature: float = 0.07  # DINO's T
    baselines: tuple[str, ...] = ()  # extra pretraining methods, from DEMO_RECIPES other than `method`
    data2vec_overrides: dict = field(default_factory=dict)  # v1's Data2VecConfig fields to change (experiments)
    seed: int = 0  # seeds model init, masks, data order and the label subsets

    @classmethod
    def quick(cls, **overrides) -> DemoConfig:
        values = dict(steps=20, warmup_steps=2, label_seeds=2, label_budgets=(5, 20))
        values.update(overrides)
        return cls(**values)


# ---- data ------------------------------------------------------------------------------------------------


def digits_tensors():
    """(train images (N, 1, 8, 8) normalised, train labels, test images, test labels) as torch tensors."""
    import torch

    from tasks.vision import DIGITS_MEAN, DIGITS_STD, load_digits_dataset

    out = []
    for split in ("train", "test"):
        ds = load_digits_dataset(split)
        images = torch.from_numpy(np.asarray(ds.images, dtype=np.float32)).unsqueeze(1)  # (N, 8, 8) -> (N, 1, 8, 8)
        out += [(images - DIGITS_MEAN[0]) / DIGITS_STD[0], torch.from_numpy(ds.labels)]
    return tuple(out)


class DigitImages:
    """Map-style dataset of {"images": (1, 8, 8)} for engine.pretrain (labels withheld)."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"images": self.images[i]}


class DigitCrops:
    """Map-style dataset of DINO multi-crop views of the digits (labels withheld)."""

    def __init__(self, images, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i])


# ---- methods -----------------------------------------------------------------------------------------------


def encoder_overrides(cfg: DemoConfig) -> dict:
    return dict(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, image_size=8, patch_size=cfg.patch_size, in_chans=1,
                position=cfg.position)


@dataclass(frozen=True)
class DemoRecipe:
    """How the demo trains one registry method on its encoder: the registry preset it starts from, the method
    fields it changes, and the optimiser settings (None = the demo's own)."""

    preset: str  # the registry preset the method's recipe starts from
    overrides: Callable[[DemoConfig], dict]  # method (and encoder) fields changed for the demo
    lr: float | None = None  # peak lr at batch 128 (None = DemoConfig.lr)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas


DEMO_RECIPES = {
    "data2vec": DemoRecipe("mini", lambda cfg: dict(mask_ratio=cfg.mask_ratio, **cfg.data2vec_overrides)),
    "dino": DemoRecipe("tiny", lambda cfg: dict(local_size=4, n_local=2, freeze_last_layer_steps=0, momentum_base=0.99,
                                                teacher_temp_warmup_steps=max(1, cfg.steps // 3))),
    # data2vec 2.0: fixed sin-cos positions (released), M = 4 masks, mask ratio 0.5 and lr 2e-3, chosen on a
    # validation split of the training digits (benchmarks/results/v1_vs_v2_select.json); betas as released
    "data2vec2": DemoRecipe("mini", lambda cfg: dict(position="sincos", num_masks=4, mask_ratio=0.5), lr=2e-3,
                            betas=(0.9, 0.95)),
}


def build_method(name: str, cfg: DemoConfig):
    """The pretraining method (from the registry) and its collate function; all share one encoder."""
    import torch

    from .methods import METHODS

    if name not in DEMO_RECIPES:
        raise CliError(f"unknown demo method {name!r}; fix: use one of {', '.join(DEMO_RECIPES)}")
    spec = METHODS[name]
    torch.manual_seed(cfg.seed)
    recipe = DEMO_RECIPES[name]
    method = spec.build("vision", recipe.preset, **{**encoder_overrides(cfg), **recipe.overrides(cfg)})
    collate = spec.views(recipe.preset, 8, cfg.steps).collate if spec.views else None
    return method, collate


def pretrain_method(name: str, cfg: DemoConfig, train_images, out: Path, quiet: bool, device: str = "cpu") -> dict:
    """Pretrain one method with engine.pretrain; returns {"backbone", "seconds", "final_loss", "metrics"}."""
    import shutil

    from ..engine import PretrainConfig, pretrain, read_metrics
    from .methods import METHODS

    method, collate = build_method(name, cfg)
    data = DigitImages(train_images)
    if METHODS[name].views is not None:  # a method with its own views (DINO's multi-crop)
        from tasks.vision import DIGITS_MEAN, DIGITS_STD

        # the images are already normalised: undo it for the crop pipeline, which normalises itself
        raw = train_images * DIGITS_STD[0] + DIGITS_MEAN[0]
        data = DigitCrops(raw, method.multicrop_transform(mean=DIGITS_MEAN, std=DIGITS_STD, flip=False))
    run_dir = out / f"pretrain-{name}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # the demo always starts afresh
    recipe = DEMO_RECIPES[name]
    lr = recipe.lr if recipe.lr is not None else cfg.lr
    pcfg = PretrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=lr, min_lr=lr / 100,
                          warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, betas=recipe.betas,
                          clip_norm=3.0, seed=cfg.seed, device=device, quiet=quiet, plots=True,
                          log_every=max(1, cfg.steps // 10),  # a line per tenth where no progress bar shows
                          find_unused_parameters=METHODS[name].find_unused_parameters)
    t0 = time.time()
    summary = pretrain(method, data, pcfg, run_dir, collate_fn=collate,
                       run_config={"method": name, "data": "sklearn digits (train pool)",
                                   "demo": dataclasses.asdict(cfg)})
    seconds = time.time() - t0
    if summary["stopped_by"]:  # Ctrl-C / SIGTERM: a half-trained encoder is not scored
        raise Interrupted(f"stopped by {summary['stopped_by']} while pretraining {name}; the demo starts afresh on "
                          "every run: rerun it", summary["stopped_by"])
    records = read_metrics(run_dir / "metrics.jsonl")
    if not quiet:
        print(f"  {name:10s} {cfg.steps} updates in {seconds:5.1f} s, final loss {summary.get('final_loss'):.4g}",
              flush=True)
    return {"backbone": method.backbone, "seconds": seconds, "final_loss": summary.get("final_loss"),
            "metrics": records, "run_dir": str(run_dir)}


# ---- evaluation --------------------------------------------------------------------------------------------


def evaluate_features(train_x, train_y, test_x, test_y, cfg: DemoConfig) -> dict:
    """{"linear": {L: [acc per subset]}, "knn": {L: [...]}} for every label budget L (`probe.few_label_eval`)."""
    from ..probe import few_label_eval

    res: dict[str, dict[int, list[float]]] = {"linear": {}, "knn": {}}
    for budget in cfg.label_budgets:
        seeds = [cfg.seed + 1000 * budget + s for s in range(cfg.label_seeds)]
        scores = few_label_eval(train_x, train_y, test_x, test_y, per_class=budget, seeds=seeds, k=cfg.knn_k,
                                temperature=cfg.knn_temperature)
        for protocol, accs in scores.items():
            res[protocol][budget] = accs
    return res


def pooled_features(backbone, images, labels, device: str = "cpu"):
    """(mean-pooled patch features (N, D), labels) of images (N, C, H, W), in chunks of 512 (shared with
    benchmarks/v1_vs_v2.py, which scores with the demo's protocol)."""
    from ..probe import extract_features

    return extract_features(backbone.to(device), [{"images": images[i : i + 512], "labels": labels[i : i + 512]}
                                                  for i in range(0, len(images), 512)], pooling="mean", device=device)


# ---- report ----------------------------------------------------------------------------------------------


def _cell(values: list[float]) -> str:
    return f"{np.mean(values):5.1f} ± {np.std(values):3.1f}"


def format_table(rows: dict[str, dict], budgets) -> str:
    cols = [(p, b) for b in budgets for p in ("linear", "knn")]
    head = f"{'features':27s}" + "".join(f"{p + ' @' + str(b) + '/class':>18s}" for p, b in cols)
    lines = [head, "-" * len(head)]
    for name, res in rows.items():
        lines.append(f"{name:27s}" + "".join(f"{_cell(res[p][b]):>18s}" for p, b in cols))
    return "\n".join(lines)


def write_plots(out: Path, rows: dict[str, dict], curves: dict[str, list[dict]], budgets) -> list[Path]:
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
        return _demo(args, cfg, out, t_start)


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
    trained = {name: pretrain_method(name, cfg, train_x, out, quiet=False, device=device)
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

    table = format_table(rows, cfg.label_budgets)
    print()
    print(f"test accuracy (%) on {len(test_x)} digits, mean ± std over {cfg.label_seeds} random label subsets")
    print(table)
    plots = write_plots(out, rows, {n: t["metrics"] for n, t in trained.items()}, cfg.label_budgets)
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
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.txt").write_text(table + "\n")
    print()
    print(f"wrote {out / 'results.json'}, {out / 'results.txt'}, " + ", ".join(str(p) for p in plots))
    print(f"total time {elapsed:.0f} s (pretraining {sum(t['seconds'] for t in trained.values()):.0f} s, "
          f"evaluation {eval_seconds:.0f} s)")
    return 0
