"""The image study (`data2vec compare`): pretrain several methods on one image data set at an equal wall-clock
budget, evaluate every encoder with the same protocols, and write one results file per (arm, seed, protocol) plus
a table and plots.

The protocol (docs/design.md section 8, which also says what published evidence predicts)
- Equal budget: each method's seconds per update are measured once by a short timed run (`budget.calibrate`), then its
  update count is fixed to budget / (seconds per update), so the learning-rate and EMA schedules stay functions of
  the step. The calibration is stored (`calibration.json`) and reused by every seed and every later session; the
  measured pretraining time of each run is recorded beside it.
- Arms: every `--methods` entry; the floors random init (the same encoder, untrained), raw pixels (frozen protocols
  only) and supervised from scratch (the same encoder and augmentation on the same labelled subset, trained for the
  pretraining budget plus the fine-tuning time of that subset).
- Validation: a stratified, seeded split carved from the training data chooses every knob (which layer and pooling
  the frozen probes read, the linear probe's C, the fine-tuning epoch); the test split is read only to report.
- Protocols: k-NN (DINO's weighted vote) and a linear probe on frozen features with all labels and with a fraction
  of them; fine-tuning with 1% and 10% of the labels (stratified subsets seeded by the run seed), full labels behind
  --finetune-full. The reported fine-tuning score is the test accuracy of the epoch chosen on validation (with
  --finetune-lr-grid, of the lr and epoch chosen on validation).

Everything is resumable: a results file that exists is never recomputed, a pretraining run continues from its
checkpoint, and `--report-only` rebuilds the table and plots from the results files alone.

This file holds the arms' pretraining and the run; the settings and recipes are in `vision_config`, the budget and
calibration shared with the text study in `budget`, the protocols in `vision_protocols`, the results files in
`records`, the table and plots in `report`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from .budget import calibrate, loss_curve, optim_settings, recipe_of
from .errors import StudyError
from .pretraining import ArmPlan, pretrain_arm_with
from .records import (
    check_same_study,
    machine_info,
    previous_pretrain,
    record,
    result_path,
    say,
    write_json,
)
from .vision_config import CompareConfig
from .vision_protocols import (
    EvalData,
    evaluate_finetune,
    evaluate_frozen,
    evaluate_supervised,
    image_protocols,
    load_eval_data,
)


def data_image_size(cfg: CompareConfig) -> int:
    """--image-size, else the data's own side (digits 8, MNIST 28, CIFAR-10 32; other images: 32)."""
    from tasks.vision.registry import build_vision_dataset

    if cfg.image_size:
        return cfg.image_size
    if cfg.data.lower() == "digits":
        return 8
    first = build_vision_dataset(cfg.data, "train", image_size=None)[0][0]
    side = first.shape[-1] if hasattr(first, "shape") else first.size[0]  # a tensor (C, H, W) or a PIL image
    return int(side) if int(side) <= 64 else 32


def image_encoder_overrides(cfg: CompareConfig, image_size: int, in_chans: int) -> dict:
    """The shared encoder's fields: width, depth, heads, the image side, the patch (4 px; 2 under 16 px), sin-cos."""
    patch = cfg.patch_size or (4 if image_size >= 16 else 2)
    if image_size % patch:
        raise StudyError(f"--patch-size {patch} does not divide the image size {image_size}; fix: choose a divisor")
    # sin-cos positions for every arm: data2vec 2.0's visible-only student needs absolute positions, and one
    # encoder for every method is the point of the comparison
    return dict(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, image_size=image_size, patch_size=patch,
                in_chans=in_chans, position="sincos")


# ---- pretraining --------------------------------------------------------------------------------------------


def build_arm(cfg: CompareConfig, name: str, image_size: int, in_chans: int, steps: int):
    """(method, pretraining dataset, collate function, optimiser settings) of one method on the shared encoder."""
    from ..methods import get_method
    from .data import build_vision_data

    spec = get_method(name)
    recipe = recipe_of(cfg, name)
    views = spec.views(cfg.preset, image_size, steps) if spec.views else None
    overrides = {**image_encoder_overrides(cfg, image_size, in_chans), **recipe.overrides}
    if views is not None:
        overrides.update(views.derived)
        if name == "dino" and "local_size" not in recipe.overrides:  # half the global size (DINO: 96 of 224)
            patch = overrides["patch_size"]
            overrides["local_size"] = max(patch, (image_size // 2) // patch * patch)
    method = spec.build("vision", cfg.preset, **overrides)
    multicrop = views.multicrop(method.cfg) if views is not None else None  # the crops the built config states
    dataset, _ = build_vision_data(cfg.data, image_size, multicrop=multicrop)
    optim = optim_settings(recipe, spec.optim["vision"], cfg.batch_size)
    return method, dataset, (views.collate if views else None), optim, spec



def uniform_collapse(records: list[dict], out_dim: int, tail: float = 0.1, tolerance: float = 0.01) -> str | None:
    """A warning when a DINO-style teacher ended at the uniform collapse: its mean per-image entropy over the last
    `tail` of the run within `tolerance` (relative) of log K, the value of a teacher that gives every image the
    uniform distribution (DINO, section 5.3: centring alone leads there). None otherwise, or for methods that do
    not log `teacher_entropy`. The run is still scored: a collapsed encoder is that method's result at that budget."""
    entropies = [r["teacher_entropy"] for r in records if "teacher_entropy" in r]
    if not entropies:
        return None
    last = float(np.mean(entropies[-max(1, int(tail * len(entropies))):]))
    log_k = float(np.log(out_dim))
    if last < (1 - tolerance) * log_k:
        return None
    return (f"the teacher ended at the uniform collapse (mean entropy {last:.3f} over the last {tail:.0%} of the run, "
            f"log K = {log_k:.3f}): its features were learned from no signal; try a longer run, a faster teacher "
            f"(--set dino.momentum_base=...), a lower teacher temperature (--set dino.teacher_temp=0.02 and "
            f"teacher_temp_start) and, on images that are mostly empty background (MNIST), no local crops "
            f"(--set dino.n_local=0); benchmarks/studies/dino_collapse.py tries one change in minutes")



def calibrate_arm(cfg: CompareConfig, name: str, data: EvalData) -> dict:
    """`budget.calibrate` of one method on this study's encoder and images."""
    return calibrate(cfg, name, lambda: build_arm(cfg, name, data.image_size, data.in_chans, steps=1000))



def pretrain_arm(cfg: CompareConfig, name: str, seed: int, data: EvalData) -> object | None:
    """Pretrain (or continue) one method for one seed (`pretraining.pretrain_arm_with`); writes
    <out>/<name>/seed<k>/pretrain.json with the loss and online k-NN curves; returns the student backbone, or None
    when every evaluation of this (arm, seed) already exists or its pretraining failed."""
    from ..hub import load_pretrained
    from .data import health_knn_probe

    def load_finished(run_dir: Path):
        return load_pretrained(run_dir).backbone if (run_dir / "checkpoint").is_dir() else None

    def aborted(error: Exception, steps: int, optim: dict) -> bool:  # diverged or collapsed: a result of the study
        write_json(result_path(cfg, name, seed, "pretrain-failed"), {
            **record(cfg, name, seed, "pretrain-failed", float("nan")), "metric": "pretraining", "reason": str(error),
            "steps": steps, "recipe": dataclasses.asdict(recipe_of(cfg, name)), "optim": optim})
        say(f"{name} seed {seed}: pretraining FAILED: {error}")
        return False

    plan = ArmPlan(protocols=image_protocols(cfg, name), calibrate=lambda: calibrate_arm(cfg, name, data),
                   build=lambda steps: build_arm(cfg, name, data.image_size, data.in_chans, steps),
                   load_finished=load_finished,
                   run_options=lambda: ({}, {"health_data": health_knn_probe(cfg.data, data.image_size, 256, seed)}),
                   aborted=aborted, record=lambda *run: pretrain_record(cfg, name, seed, *run),
                   result=lambda method: method.backbone)
    return pretrain_arm_with(cfg, name, seed, plan)


def pretrain_record(cfg: CompareConfig, name: str, seed: int, method, final: dict, run_dir: Path, steps: int,
                    calib: dict, optim: dict, wall: float, stopped: str | None) -> dict:
    """pretrain.json of an image arm: the budget, the loss curve, the online k-NN curve, a collapse warning."""
    from ..engine import read_metrics

    records = read_metrics(run_dir / "metrics.jsonl")
    clock, curve = loss_curve(records, cfg.clock)
    knn_curve = [{"step": r["step"], "seconds": float(c), "knn": r["health/knn_acc"]}
                 for r, c in zip(records, clock, strict=True) if "health/knn_acc" in r]
    warning = uniform_collapse(records, method.cfg.out_dim) if hasattr(method.cfg, "out_dim") else None  # DINO
    if warning:
        say(f"WARNING {name} seed {seed}: {warning}")
    return {
        **record(cfg, name, seed, "pretrain", float("nan")), "metric": "pretraining", "steps": steps,
        "batch_size": cfg.batch_size, "samples_seen": steps * cfg.batch_size, "calibration": calib,
        "train_seconds": float(clock[-1]), "clock": cfg.clock,
        "train_wall_seconds": float(sum(r["step_time"] for r in records)), "wall_seconds_this_launch": wall,
        "final_loss": final.get("final_loss"), "optim": optim, "recipe": dataclasses.asdict(recipe_of(cfg, name)),
        "curve": curve, "knn_curve": knn_curve, **({"warning": warning} if warning else {}),
        **previous_pretrain(run_dir, final.get("final_loss"))}


# ---- the modality's part of the run (`pipeline.run_comparison`) ----------------------------------------------


def check(cfg: CompareConfig) -> None:
    """The stored settings, before any work."""
    check_same_study(cfg)


def config_record(cfg: CompareConfig) -> dict:
    """OUT/config.json of an image study (JSON keys are strings: the epochs per fraction keyed by str)."""
    return {**dataclasses.asdict(cfg), "machine": machine_info(),
            "finetune_epochs": {str(k): v for k, v in cfg.finetune_epochs.items()}}


def load(cfg: CompareConfig) -> EvalData:
    """The evaluation images in memory and the validation split (the same at every budget)."""
    size = data_image_size(cfg)
    t0 = time.time()
    data = load_eval_data(cfg, size)
    say(f"{cfg.data}: {len(data.train_y)} training images ({len(data.val_idx)} of them the validation split), "
        f"{len(data.test_y)} test images, {data.num_classes} classes, {size} px; loaded in {time.time() - t0:.0f} s")
    return data


def prepare(cfg: CompareConfig, data: EvalData) -> None:
    """Every method's calibration, back to back under the same conditions (a curve's point reads the curve's)."""
    for name in cfg.methods:
        calibrate_arm(cfg, name, data)


def scored_arms(cfg: CompareConfig) -> tuple[str, ...]:
    return cfg.arms


def start_seed(cfg: CompareConfig, seed: int, data: EvalData):
    """The seed's random-init encoder, shared by the random floor and the supervised one."""
    from ..backbone import build_backbone
    from ..checkpoint import set_seed
    from ..config import get_preset

    set_seed(seed)
    return build_backbone(get_preset("vision", cfg.preset, **image_encoder_overrides(cfg, data.image_size,
                                                                                     data.in_chans)))


def score_arm(cfg: CompareConfig, arm: str, seed: int, data: EvalData, random_backbone) -> None:
    """Score one arm: the floors with their protocols, a method after its pretraining."""
    if arm == "random":
        evaluate_frozen(cfg, arm, seed, random_backbone, data)
        evaluate_finetune(cfg, arm, seed, random_backbone, data)
    elif arm == "pixels":
        evaluate_frozen(cfg, arm, seed, None, data)
    elif arm == "supervised":
        evaluate_supervised(cfg, seed, data, random_backbone)
    else:
        backbone = pretrain_arm(cfg, arm, seed, data)
        if backbone is not None:
            evaluate_frozen(cfg, arm, seed, backbone, data)
            evaluate_finetune(cfg, arm, seed, backbone, data)
