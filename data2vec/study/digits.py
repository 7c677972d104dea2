"""The digits demo's library pieces: scikit-learn's 8 x 8 digits in memory, the methods at demo scale, their
pretraining, and the frozen-feature protocol (mean-pooled features, few-label linear probe and k-NN).

`data2vec demo` runs them (its docstring tells the whole story and the recipes' reasons); the tutorials and
`benchmarks/v1_vs_v2.py` reuse them, so the same data, recipes and scoring stand behind every digits number.

Differences from the papers' recipes: data2vec 2.0 uses 4 masks instead of 16 and a 0.5 mask ratio instead of
0.8 on the 4 x 4 grid, data2vec v1 absolute learned positions and a 40 % mask (DemoConfig and DEMO_RECIPES say
why); no augmentation besides masking.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import StudyError, StudyInterrupted


@dataclass
class DemoConfig:
    """The demo's settings; the defaults take a few minutes on 2 CPU cores (README: the measured time)."""

    method: str = "data2vec2"  # the method shown; "data2vec" for v1 (v2 won every protocol of the digits study)
    steps: int = 1000  # updates of every method (about 45 passes over the 1,438 training images at batch 64)
    batch_size: int = 64  # images per update (128 until the demo had to fit in two minutes: benchmarks/README.md)
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
    data2vec2_overrides: dict = field(default_factory=dict)  # ... and data2vec 2.0's (benchmarks/demo_select.py)
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


# ---- methods -----------------------------------------------------------------------------------------------


def demo_encoder_overrides(cfg: DemoConfig) -> dict:
    """The demo's encoder: 8 x 8 grey images, the DemoConfig's width, depth, heads, patch and positions."""
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
    # data2vec 2.0: fixed sin-cos positions (released), mask ratio 0.5 and lr 2e-3, chosen on a validation split of
    # the training digits (benchmarks/results/v1_vs_v2_select.json); betas as released; M = 2 masks (4 before) and
    # batch 64 (128 before) for a demo of under two minutes: 30 % of the old compute; on a validation split the
    # same scores within the label subsets' spread but the 50-label linear probe, 2.3 points lower
    # (benchmarks/results/demo_select.json; docs/performance.md, "The demo's time")
    "data2vec2": DemoRecipe("mini", lambda cfg: {**dict(position="sincos", num_masks=2, mask_ratio=0.5),
                                                 **cfg.data2vec2_overrides}, lr=2e-3, betas=(0.9, 0.95)),
}


def build_demo_method(name: str, cfg: DemoConfig):
    """The pretraining method (from the registry) and its collate function; all share one encoder."""
    import torch

    from ..methods import METHODS

    if name not in DEMO_RECIPES:
        raise StudyError(f"unknown demo method {name!r}; fix: use one of {', '.join(DEMO_RECIPES)}")
    spec = METHODS[name]
    torch.manual_seed(cfg.seed)
    recipe = DEMO_RECIPES[name]
    method = spec.build("vision", recipe.preset, **{**demo_encoder_overrides(cfg), **recipe.overrides(cfg)})
    collate = spec.views(recipe.preset, 8, cfg.steps).collate if spec.views else None
    return method, collate


def pretrain_method(name: str, cfg: DemoConfig, train_images, out: Path, quiet: bool, device: str = "cpu",
                    bf16: bool = False, plots: bool = True) -> dict:
    """Pretrain one method with engine.pretrain (`bf16`: autocast, see data2vec.precision; `plots`: the run
    folder's plots/*.png); returns {"backbone", "seconds", "final_loss", "metrics"}."""
    import shutil

    from ..engine import PretrainConfig, pretrain, read_metrics
    from ..methods import METHODS

    method, collate = build_demo_method(name, cfg)
    data = DigitImages(train_images)
    if METHODS[name].views is not None:  # a method with its own views (DINO's multi-crop)
        from tasks.vision import DIGITS_MEAN, DIGITS_STD

        from .data import Mapped

        # the images are already normalised: undo it for the crop pipeline, which normalises itself
        raw = train_images * DIGITS_STD[0] + DIGITS_MEAN[0]
        data = Mapped(raw, method.multicrop_transform(mean=DIGITS_MEAN, std=DIGITS_STD, flip=False))
    run_dir = out / f"pretrain-{name}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # the demo always starts afresh
    recipe = DEMO_RECIPES[name]
    lr = recipe.lr if recipe.lr is not None else cfg.lr
    pcfg = PretrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=lr, min_lr=lr / 100,
                          warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, betas=recipe.betas,
                          clip_norm=3.0, seed=cfg.seed, device=device, quiet=quiet, plots=plots,
                          log_every=max(1, cfg.steps // 10),  # a line per tenth where no progress bar shows
                          find_unused_parameters=METHODS[name].find_unused_parameters, bf16=bf16)
    t0 = time.time()
    summary = pretrain(method, data, pcfg, run_dir, collate_fn=collate,
                       run_config={"method": name, "data": "sklearn digits (train pool)",
                                   "demo": dataclasses.asdict(cfg)})
    seconds = time.time() - t0
    if summary["stopped_by"]:  # Ctrl-C / SIGTERM: a half-trained encoder is not scored
        raise StudyInterrupted(f"stopped by {summary['stopped_by']} while pretraining {name}; the demo starts afresh "
                               "on every run: rerun it", summary["stopped_by"])
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
    benchmarks/v1_vs_v2.py and the tutorials, which score with the demo's protocol)."""
    from ..probe import extract_features

    return extract_features(backbone.to(device), [{"images": images[i : i + 512], "labels": labels[i : i + 512]}
                                                  for i in range(0, len(images), 512)], pooling="mean", device=device)
