"""The image study's evaluation protocols (`data2vec compare`, docs/design.md section 8): frozen k-NN and linear
probe, fine-tuning with few labels, and the supervised floor, every knob chosen on a validation split.

- Frozen features (DINO section 4.2's weighted k-NN, k = 20, T = 0.07; a logistic-regression linear probe): each
  protocol reads the block and pooling it scores best with on the validation split (BEiT's linear probe reads an
  intermediate block), also centred by the training mean; with all labels and with `frozen_fraction` of them.
- Fine-tuning (BEiT's recipe as `data2vec.finetune` runs it: layer decay, label smoothing) on stratified, seeded
  subsets of the labels; the reported score is the test accuracy of the epoch (and, with a grid, the lr) chosen on
  the validation split, never the best epoch on test.
- Supervised from scratch: the same encoder and augmentation on the same labels, for the pretraining budget plus
  that subset's fine-tuning time.

Differences from the papers: a few-label k-NN / linear probe on the study's own splits instead of ImageNet's 1 %
and 10 % subsets; fine-tuning epochs raised to at least `finetune_min_updates` updates for tiny labelled subsets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .budget import compute_settings
from .protocols import FROZEN, finetune_epochs, finetune_record, score_frozen, supervised_budget
from .records import pct, record, result_path, say, write_json
from .vision_config import CompareConfig


def image_protocols(cfg: CompareConfig, arm: str) -> list[str]:
    """The protocols an arm is scored with: pixels have no encoder to fine-tune, supervised has no frozen features
    of its own (it is the fine-tuning floor)."""
    frozen = [f"{p}@100%" for p in FROZEN] + [f"{p}@{pct(cfg.frozen_fraction)}" for p in FROZEN]
    tuned = [f"finetune@{pct(f)}" for f in cfg.finetune_fractions]
    if arm == "pixels":
        return frozen
    if arm == "supervised":
        return tuned
    return frozen + tuned


# ---- the evaluation data ------------------------------------------------------------------------------------


@dataclass
class EvalData:
    """The evaluation images in memory (evaluation transform), the validation split and the augmented train set."""

    train_x: object  # (N, C, H, W) float tensor, evaluation transform
    train_y: np.ndarray  # (N,)
    test_x: object  # (M, C, H, W)
    test_y: np.ndarray  # (M,)
    fit_idx: np.ndarray  # training indices outside the validation split
    val_idx: np.ndarray  # the validation split (stratified, seeded 0: the same for every arm and seed)
    augmented: object  # the train split with the training augmentation (fine-tuning, supervised)
    num_classes: int
    in_chans: int
    image_size: int


def load_eval_data(cfg: CompareConfig, image_size: int) -> EvalData:
    import torch

    from ..label_splits import validation_split
    from .data import image_splits

    train, test, num_classes, chans = image_splits(cfg.data, image_size, seed=0, augment_train=False)
    augmented = image_splits(cfg.data, image_size, seed=0, augment_train=True)[0]

    def stack(dataset):
        xs, ys = [], []
        for i in range(len(dataset)):
            x, y = dataset[i]
            xs.append(x)
            ys.append(int(y))
        return torch.stack(xs), np.asarray(ys)  # (N, C, H, W), (N,)

    train_x, train_y = stack(train)
    test_x, test_y = stack(test)
    fit_idx, val_idx = validation_split(train_y, cfg.val_fraction, seed=0, max_examples=cfg.val_max)
    return EvalData(train_x, train_y, test_x, test_y, fit_idx, val_idx, augmented, num_classes, chans, image_size)


# ---- the protocols ------------------------------------------------------------------------------------------


def evaluate_frozen(cfg: CompareConfig, arm: str, seed: int, backbone, data: EvalData) -> None:
    from ..probe import layer_features

    wanted = [p for p in image_protocols(cfg, arm) if not p.startswith("finetune")]
    if all(result_path(cfg, arm, seed, p).is_file() for p in wanted) or not wanted:
        return
    t0 = time.time()
    if backbone is None:  # raw pixels: the image itself is the feature vector
        feats = {"pixels": data.train_x.flatten(1).numpy()}
        test_feats = {"pixels": data.test_x.flatten(1).numpy()}
    else:
        backbone = backbone.to(cfg.device)

        def chunks(x, y):
            return [{"images": x[i : i + 256], "labels": y[i : i + 256]} for i in range(0, len(x), 256)]

        feats, _ = layer_features(backbone, chunks(data.train_x, data.train_y), cfg.device)
        test_feats, _ = layer_features(backbone, chunks(data.test_x, data.test_y), cfg.device)
    score_frozen(cfg, arm, seed, feats, test_feats, data, t0)


def finetune_run(cfg: CompareConfig, arm: str, seed: int, backbone, data: EvalData, fraction: float,
                 epochs: int, recipe: dict) -> dict:
    """Fine-tune `backbone` (deep-copied) on `fraction` of the labels; the epoch is chosen on validation."""
    import copy

    from torch.utils.data import Subset

    from tasks.vision import image_collate

    from ..finetune import FinetuneConfig, finetune
    from ..heads import ImageClassificationHead, TaskModel
    from ..label_splits import fraction_indices

    fit_y = data.train_y[data.fit_idx]
    labelled = data.fit_idx[fraction_indices(fit_y, fraction, seed)] if fraction < 1 else data.fit_idx
    # the selection split: a fixed seeded subset of the validation split (random, not its first rows: an image
    # folder lists its images class by class)
    val = np.sort(np.random.default_rng(0).permutation(data.val_idx)[:2000])
    model = TaskModel(copy.deepcopy(backbone), ImageClassificationHead(backbone.cfg.dim, data.num_classes,
                                                                       pooling="mean"))
    fcfg = FinetuneConfig.vision_defaults(epochs=epochs, batch_size=min(cfg.batch_size, len(labelled)), seed=seed,
                                          device=cfg.device, save_best=False, log_every=0, warmup_ratio=0.1,
                                          eval_every=max(1, epochs // 10), **recipe, **compute_settings(cfg))

    def metric_fn(outputs, labels):
        return {"accuracy": 100.0 * float((outputs.argmax(-1) == labels).mean())}

    plain = Subset(data_as_dataset(data.train_x, data.train_y), val.tolist())
    test = data_as_dataset(data.test_x, data.test_y)
    lr_tag = f"-lr{recipe['lr']:g}" if cfg.finetune_lr_grid else ""  # one run folder per lr of a grid
    run_dir = Path(cfg.runs) / f"finetune-{arm}-seed{seed}-{pct(fraction).replace('%', 'pct')}{lr_tag}"
    summary = finetune(model, Subset(data.augmented, labelled.tolist()), plain, fcfg, run_dir, metric_fn,
                       collate_fn=image_collate, quiet=True, test_set=test, resume=True)  # an interrupted run goes on
    return {"summary": summary, "labelled": int(len(labelled)), "cpu_seconds": summary["cpu_time_s"],
            "train_seconds": summary["train_wall_time_s"], "train_cpu_seconds": summary["train_cpu_time_s"]}


class data_as_dataset:  # noqa: N801  (a tiny adapter, named like the function it replaces)
    """(x (N, ...) tensor, y (N,)) -> a map-style dataset of (x_i, y_i) pairs."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def finetune_choosing_lr(cfg: CompareConfig, arm: str, seed: int, backbone, data: EvalData, fraction: float,
                         epochs: int, layer_decay: float | None) -> tuple[dict, dict, dict]:
    """`finetune_run` at cfg.finetune_lr, or at every lr of cfg.finetune_lr_grid keeping the run whose selection-split
    accuracy (at its selected epoch) is best. Returns (that run, its recipe, {lr: selection-split accuracy})."""
    runs = {}
    for lr in cfg.finetune_lr_grid or (cfg.finetune_lr,):
        recipe = dict(lr=lr, layer_decay=layer_decay)
        runs[lr] = (finetune_run(cfg, arm, seed, backbone, data, fraction, epochs, recipe), recipe)
    scores = {lr: out["summary"]["best"]["accuracy"] for lr, (out, _) in runs.items()}
    best = max(scores, key=lambda lr: (scores[lr], -lr))  # ties: the smaller lr
    if len(runs) > 1:
        say(f"{arm} seed {seed} finetune@{pct(fraction)}: lr {best:g} chosen on validation ("
            + ", ".join(f"{lr:g}: {a:.1f} %" for lr, a in scores.items()) + ")")
    out, recipe = runs[best]
    return out, recipe, scores


def evaluate_finetune(cfg: CompareConfig, arm: str, seed: int, backbone, data: EvalData) -> None:
    for fraction in cfg.finetune_fractions:
        name = f"finetune@{pct(fraction)}"
        path = result_path(cfg, arm, seed, name)
        if path.is_file():
            continue
        epochs = finetune_epochs(cfg, data, fraction)
        out, recipe, scores = finetune_choosing_lr(cfg, arm, seed, backbone, data, fraction, epochs, cfg.layer_decay)
        s = out["summary"]
        write_json(path, record(cfg, arm, seed, name, s["test"]["selected"]["accuracy"],
                                **finetune_record(out, recipe, scores, epochs)))
        chosen = s["test"]["selected"]
        say(f"{arm} seed {seed} {name}: {chosen['accuracy']:.2f} % (epoch {chosen['epoch']} of {epochs} chosen on "
            f"validation; last {s['test']['last']['accuracy']:.2f} %; {s['wall_time_s']:.0f} s)")


def evaluate_supervised(cfg: CompareConfig, seed: int, data: EvalData, random_backbone) -> None:
    """Supervised from scratch on each labelled subset, for the pretraining budget plus the fine-tuning time of
    that subset (`supervised_budget`: the same epochs for every seed)."""
    for fraction in cfg.finetune_fractions:
        name = f"finetune@{pct(fraction)}"
        path = result_path(cfg, "supervised", seed, name)
        if path.is_file():
            continue
        plan = supervised_budget(cfg, name, seed)
        epochs, budget, clock = plan["epochs"], plan["budget_seconds"], plan["clock"]
        say(f"supervised seed {seed} {name}: {epochs} epochs (~{budget / 60:.1f} min = pretraining budget + "
            f"fine-tuning updates of {plan['from']})")
        out, recipe, scores = finetune_choosing_lr(cfg, "supervised", seed, random_backbone, data, fraction, epochs,
                                                   layer_decay=None)  # nothing pretrained to protect in lower layers
        s = out["summary"]
        write_json(path, record(cfg, "supervised", seed, name, s["test"]["selected"]["accuracy"],
                                budget_seconds=budget, budget_clock=clock,
                                **finetune_record(out, recipe, scores, epochs)))
        say(f"supervised seed {seed} {name}: {s['test']['selected']['accuracy']:.2f} % ({s['wall_time_s']:.0f} s)")
