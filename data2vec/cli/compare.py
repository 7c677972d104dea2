"""`data2vec compare`: pretrain several methods on one image data set at an equal wall-clock budget, evaluate every
encoder with the same protocols, and write one results file per (arm, seed, protocol) plus a table and plots.

The protocol (docs/design.md section 8; ../shared/DESIGN.md section 8 explains what published evidence predicts)
- Equal budget: each method's seconds per update are measured once by a short timed run (`calibrate`), then its
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

This file holds the configuration, the recipes, the equal-budget pretraining and the run; the protocols are in
`compare_protocols`, the results files in `compare_records`, the table and plots in `compare_report`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .compare_protocols import (
    EvalData,
    evaluate_finetune,
    evaluate_frozen,
    evaluate_supervised,
    load_eval_data,
    protocols,
)
from .compare_records import (
    machine_info,
    previous_pretrain,
    record,
    result_path,
    retire_pretrain_record,
    say,
    write_json,
)
from .errors import CliError, HelpFormatter, Interrupted
from .flags import add_device_and_threads

FLOORS = ("random", "pixels", "supervised")  # arms that are not pretraining methods


@dataclass(frozen=True)
class CompareRecipe:
    """How `compare` trains one registry method on the shared encoder: method fields and optimiser changes."""

    overrides: dict = field(default_factory=dict)  # method fields (the encoder's come from CompareConfig)
    lr: float | None = None  # peak lr at --batch-size (None = the registry's default for the batch)
    betas: tuple[float, float] | None = None  # None = the registry's


# Starting points at reduced scale; the study's README records what was tried on the validation split.
RECIPES = {
    "data2vec": CompareRecipe(),  # the registry's reduced vision preset (K scaled with depth, tau ramp 0.3 of the run)
    # data2vec 2.0: M = 4 masks and mask ratio 0.5 at lr 2e-3 were chosen on validation digits
    # (benchmarks/results/v1_vs_v2_select.json); M = 16 (released) costs 4x the student passes per update
    "data2vec2": CompareRecipe(overrides=dict(num_masks=4, mask_ratio=0.5), lr=2e-3),
    # DINO: the registry's reduced preset and lr rule (5e-4 x batch / 256), with a faster teacher (momentum 0.99 from
    # 0.996) and tau_t held at 0.04 (no warm-up to 0.07): chosen on CIFAR-10's training images, where the preset
    # sat at the uniform collapse (teacher entropy = log K) through all of a 392-update run
    # (benchmarks/studies/README.md, "What was tried")
    "dino": CompareRecipe(overrides=dict(momentum_base=0.99, teacher_temp=0.04)),
}


def recipe_of(cfg: CompareConfig, name: str) -> CompareRecipe:
    """RECIPES[name] with this comparison's `--set` changes on top (lr = the peak lr; the rest are config fields)."""
    base = RECIPES.get(name, CompareRecipe())
    sets = dict(cfg.recipe_sets.get(name, {}))
    lr = sets.pop("lr", base.lr)
    return dataclasses.replace(base, overrides={**base.overrides, **sets}, lr=lr)


def parse_recipe_sets(items: list[str], methods: tuple[str, ...]) -> dict:
    """--set METHOD.KEY=VALUE items as {method: {key: value}}; the method must be an arm of this comparison and
    the key a field of its config or of the encoder (or lr)."""
    from .methods import get_method
    from .pretrain import _parse_sets, check_sets

    out: dict = {}
    for item in items:
        target, sep, _ = item.partition("=")
        method, dot, key = target.partition(".")
        if not sep or not dot or not key.strip():
            raise CliError(f"--set {item!r} is not METHOD.KEY=VALUE; fix: e.g. --set data2vec.lr=1e-3")
        method = method.strip()
        if method not in methods:
            raise CliError(f"--set {item!r}: {method} is not among --methods {','.join(methods)}; fix: name one "
                           "of them")
        (value,) = _parse_sets([item.partition(".")[2]]).values()
        if key.strip() != "lr":
            check_sets(get_method(method), {key.strip(): value})
        elif not isinstance(value, (int, float)) or value <= 0:
            raise CliError(f"--set {item!r}: lr must be a number > 0; fix: e.g. --set {method}.lr=1e-3")
        out.setdefault(method, {})[key.strip()] = value
    return out


@dataclass
class CompareConfig:
    """One comparison: the data, the arms, the shared encoder, the budget and the evaluation protocols."""

    data: str  # 'digits', a CIFAR-10/MNIST folder or an image folder
    out: str  # results folder (JSON per result, table, plots): small, meant to be committed
    runs: str  # run folders (checkpoints): large, keep them out of git
    methods: tuple[str, ...] = ("data2vec", "data2vec2", "dino")  # pretraining arms (registry names)
    budget_minutes: float = 15.0  # pretraining wall-clock per method and seed
    seeds: tuple[int, ...] = (1, 2, 3)  # one pretraining run and one label subset per seed
    preset: str = "mini"  # the registry preset every method's recipe starts from
    dim: int = 128  # encoder width (4 x 128 with 4 px patches: ~1,700 data2vec updates in 15 min on one CPU core)
    depth: int = 4  # encoder blocks
    heads: int = 4  # attention heads
    patch_size: int | None = None  # None = 4 (2 for images under 16 px)
    image_size: int | None = None  # None = the data's (digits 8, CIFAR/MNIST 32)
    batch_size: int = 64  # pretraining and fine-tuning batch
    calibration_steps: int = 6  # timed updates per method (after 2 untimed ones) that fix the step counts
    frozen_fraction: float = 0.01  # the few-label frozen protocols use this fraction of the labels
    finetune_fractions: tuple[float, ...] = (0.01, 0.1)  # fine-tuning label fractions (1.0 with --finetune-full)
    finetune_epochs: dict = field(default_factory=lambda: {0.01: 40, 0.1: 10, 1.0: 5})  # epochs per fraction,
    finetune_min_updates: int = 300  # ... raised to reach at least this many updates (small data sets: digits)
    finetune_lr: float = 1e-3  # one recipe for every arm (AdamW, cosine, warm-up 10%, label smoothing 0.1)
    layer_decay: float = 0.75  # layer-wise lr decay of the fine-tuning recipe (BEiT for shallow models)
    # () = finetune_lr for every arm (the studies so far); else every fine-tuning protocol of every arm runs once per
    # lr and reports the lr whose selection-split accuracy is best (MAE / BEiT sweep the lr per model), at len(grid)
    # times the cost: at 1e-3 a random-init encoder barely trains on 1 % of MNIST (benchmarks/studies/README.md)
    finetune_lr_grid: tuple[float, ...] = ()
    val_fraction: float = 0.1  # validation split carved from the training data
    val_max: int = 5000  # at most this many validation images (frozen probes); fine-tuning selection uses 2,000
    linear_max_iter: int = 300  # L-BFGS iterations of the all-label linear probe (the few-label one uses 1000)
    knn_k: int = 20  # DINO's k
    knn_temperature: float = 0.07  # DINO's T
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads (None = torch's choice); recorded with every result
    clock: str = "cpu"  # the budget's clock: "cpu" = this process's CPU seconds (CPU runs: immune to other work on
    #   the machine; equal to wall-clock for one thread on an idle core), "wall" = wall-clock (GPU runs)
    quick: bool = False  # the smoke version (digits, seconds per method)
    command: str = ""  # the command line, stored with every result
    # --set METHOD.KEY=VALUE for a tuning run: {method: {field or "lr": value}} on top of RECIPES (its own --out)
    recipe_sets: dict = field(default_factory=dict)

    @property
    def arms(self) -> tuple[str, ...]:
        return ("random",) + tuple(self.methods) + ("pixels", "supervised")

    @property
    def budget_s(self) -> float:
        return 60.0 * self.budget_minutes


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


def encoder_overrides(cfg: CompareConfig, image_size: int, in_chans: int) -> dict:
    patch = cfg.patch_size or (4 if image_size >= 16 else 2)
    if image_size % patch:
        raise CliError(f"--patch-size {patch} does not divide the image size {image_size}; fix: choose a divisor")
    # sin-cos positions for every arm: data2vec 2.0's visible-only student needs absolute positions, and one
    # encoder for every method is the point of the comparison
    return dict(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, image_size=image_size, patch_size=patch,
                in_chans=in_chans, position="sincos")


# ---- pretraining --------------------------------------------------------------------------------------------


def build_arm(cfg: CompareConfig, name: str, image_size: int, in_chans: int, steps: int):
    """(method, pretraining dataset, collate function, optimiser settings) of one method on the shared encoder."""
    from .common import build_vision_data
    from .methods import get_method

    spec = get_method(name)
    recipe = recipe_of(cfg, name)
    views = spec.views(cfg.preset, image_size, steps) if spec.views else None
    overrides = {**encoder_overrides(cfg, image_size, in_chans), **recipe.overrides}
    if views is not None:
        overrides.update(views.derived)
        if name == "dino" and "local_size" not in recipe.overrides:  # half the global size (DINO: 96 of 224)
            patch = overrides["patch_size"]
            overrides["local_size"] = max(patch, (image_size // 2) // patch * patch)
    method = spec.build("vision", cfg.preset, **overrides)
    multicrop = views.multicrop(method.cfg) if views is not None else None  # the crops the built config states
    dataset, _ = build_vision_data(cfg.data, image_size, multicrop=multicrop)
    defaults = spec.optim["vision"]
    lr = recipe.lr if recipe.lr is not None else defaults.scaled_lr(cfg.batch_size)
    optim = dict(lr=lr, weight_decay=defaults.weight_decay, betas=recipe.betas or defaults.betas,
                 clip_norm=defaults.clip_norm)
    return method, dataset, (views.collate if views else None), optim, spec


def pretrain_config(cfg: CompareConfig, optim: dict, steps: int, seed: int, spec, **extra):
    from ..engine import PretrainConfig

    values = dict(steps=steps, batch_size=cfg.batch_size, lr=optim["lr"], min_lr=optim["lr"] / 100,
                  weight_decay=optim["weight_decay"], betas=optim["betas"], clip_norm=optim["clip_norm"], seed=seed,
                  device=cfg.device, quiet=True, log_every=0, find_unused_parameters=spec.find_unused_parameters,
                  plots=False)  # the comparison draws its own curves; per-checkpoint plots cost seconds each
    values.update(extra)
    return PretrainConfig(**values)


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


def step_seconds(record: dict, clock: str) -> float:
    """One update's cost on the budget's clock (metrics.jsonl: `step_cpu_time` or `step_time`)."""
    return record["step_cpu_time"] if clock == "cpu" else record["step_time"]


def calibration_load(cfg, name: str) -> float | None:
    """The machine's 1-minute load average just after `name` was calibrated (stored with the calibration), with a
    warning when other work shared the cores: on SMT siblings it slows even the CPU-time clock, so the step count
    fixed from that measurement would be too small."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if load is not None and load > (cfg.threads or os.cpu_count() or 1) + 0.5:
        say(f"warning: the machine's load average is {load:.1f} while {name} is calibrated; other work shares the "
            "cores (and, on SMT siblings, slows even the CPU-time clock), so the step counts may be off")
    return load


def calibrate(cfg: CompareConfig, name: str, image_size: int, in_chans: int) -> dict:
    """Seconds per update of `name`, measured by a short run (median of the timed updates), and the step count that
    fills the budget. Stored in calibration.json and reused, so every seed and session runs the same updates."""
    import shutil

    from ..checkpoint import set_seed
    from ..engine import pretrain, read_metrics

    path = Path(cfg.out) / "calibration.json"
    table = json.loads(path.read_text()) if path.is_file() else {}
    if name in table:
        return table[name]
    n = cfg.calibration_steps + 2
    set_seed(0)
    method, dataset, collate, optim, spec = build_arm(cfg, name, image_size, in_chans, steps=1000)
    run_dir = Path(cfg.runs) / f"calibrate-{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    say(f"calibrating {name}: {n} updates at batch {cfg.batch_size}")
    summary = pretrain(method, dataset, pretrain_config(cfg, optim, n, 0, spec, plots=False, health_every=0,
                                                        warmup_steps=1), run_dir, collate_fn=collate)
    times = [step_seconds(r, cfg.clock) for r in read_metrics(run_dir / "metrics.jsonl")][2:]
    shutil.rmtree(run_dir, ignore_errors=True)
    if summary["stopped_by"]:  # a signal stopped it: store nothing, the next launch measures again
        raise Interrupted(f"the calibration of {name} was stopped by {summary['stopped_by']}; rerun the same command "
                          "to continue (finished results are kept)", summary["stopped_by"])
    s_per_update = float(np.median(times))
    load = calibration_load(cfg, name)
    steps = max(10, int(cfg.budget_s // s_per_update))
    table[name] = {"s_per_update": s_per_update, "clock": cfg.clock, "steps": steps, "batch_size": cfg.batch_size,
                   "budget_minutes": cfg.budget_minutes, "timed_updates": len(times), "load_average": load,
                   "machine": machine_info(),
                   "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json(path, table)
    say(f"{name}: {s_per_update:.3f} s/update -> {steps} updates in {cfg.budget_minutes:g} min")
    return table[name]


def pretrain_arm(cfg: CompareConfig, name: str, seed: int, data: EvalData) -> object | None:
    """Pretrain (or continue) one method for one seed; writes <out>/<name>/seed<k>/pretrain.json; returns the
    student backbone, or None when every evaluation of this (arm, seed) already exists."""
    from ..checkpoint import set_seed
    from ..engine import TrainingAborted, pretrain, read_metrics
    from ..hub import load_pretrained
    from .common import health_knn_probe

    summary_path = result_path(cfg, name, seed, "pretrain")
    failed_path = result_path(cfg, name, seed, "pretrain-failed")
    pending = [p for p in protocols(cfg, name) if not result_path(cfg, name, seed, p).is_file()]
    run_dir = Path(cfg.runs) / f"{name}-seed{seed}"
    if failed_path.is_file():
        say(f"{name} seed {seed}: its pretraining failed before ({json.loads(failed_path.read_text())['reason']}); "
            f"skipped (delete {failed_path} and {run_dir} to try again, e.g. after changing its recipe)")
        return None
    if summary_path.is_file() and not pending:
        return None
    if summary_path.is_file() and (run_dir / "checkpoint").is_dir():
        return load_pretrained(run_dir).backbone
    if summary_path.is_file():
        retire_pretrain_record(summary_path, run_dir, pending)
    calib = calibrate(cfg, name, data.image_size, data.in_chans)
    steps = calib["steps"]
    set_seed(seed)
    method, dataset, collate, optim, spec = build_arm(cfg, name, data.image_size, data.in_chans, steps)
    resume = (run_dir / "checkpoint").is_dir() or (run_dir / "checkpoint.old").is_dir()
    say(f"pretraining {name} seed {seed}: {steps} updates x batch {cfg.batch_size} (~{cfg.budget_minutes:g} min)"
        + (" (resuming)" if resume else ""))
    knn = health_knn_probe(cfg.data, data.image_size, 256, seed)
    pcfg = pretrain_config(cfg, optim, steps, seed, spec, save_every=max(1, steps // 5),
                           health_every=max(1, steps // 15), quiet=not sys.stdout.isatty())
    t0 = time.time()
    try:
        final = pretrain(method, dataset, pcfg, run_dir, resume=resume, collate_fn=collate, health_data=knn,
                         run_config={"command": "compare", "method": name, "data": cfg.data})
    except TrainingAborted as error:  # diverged or collapsed: a result of the comparison, not a crash of it
        write_json(failed_path, {**record(cfg, name, seed, "pretrain-failed", float("nan")), "metric": "pretraining",
                                 "reason": str(error), "steps": steps,
                                 "recipe": dataclasses.asdict(recipe_of(cfg, name)), "optim": optim})
        say(f"{name} seed {seed}: pretraining FAILED: {error}")
        return None
    wall = time.time() - t0
    if final.get("stopped_by"):  # Ctrl-C / SIGTERM: the checkpoint is saved; a half-trained encoder is not scored
        raise Interrupted(f"pretraining of {name} seed {seed} stopped by {final['stopped_by']} after update "
                          f"{final.get('steps_done')} of {steps}; fix: rerun the same command to continue from the "
                          "checkpoint (finished results are kept)", final["stopped_by"])
    records = read_metrics(run_dir / "metrics.jsonl")
    clock = np.cumsum([step_seconds(r, cfg.clock) for r in records])  # budget seconds since the start (no health)
    every = max(1, len(records) // 200)
    curve = [{"step": r["step"], "seconds": float(c), "loss": r["loss"]}
             for r, c in zip(records, clock, strict=True)][::every]
    knn_curve = [{"step": r["step"], "seconds": float(c), "knn": r["health/knn_acc"]}
                 for r, c in zip(records, clock, strict=True) if "health/knn_acc" in r]
    warning = uniform_collapse(records, method.cfg.out_dim) if hasattr(method.cfg, "out_dim") else None  # DINO
    if warning:
        say(f"WARNING {name} seed {seed}: {warning}")
    write_json(summary_path, {
        **record(cfg, name, seed, "pretrain", float("nan")), "metric": "pretraining", "steps": steps,
        "batch_size": cfg.batch_size, "samples_seen": steps * cfg.batch_size, "calibration": calib,
        "train_seconds": float(clock[-1]), "clock": cfg.clock,
        "train_wall_seconds": float(sum(r["step_time"] for r in records)), "wall_seconds_this_launch": wall,
        "final_loss": final.get("final_loss"), "optim": optim, "recipe": dataclasses.asdict(recipe_of(cfg, name)),
        "curve": curve, "knn_curve": knn_curve, **({"warning": warning} if warning else {}),
        **previous_pretrain(run_dir, final.get("final_loss"))})
    return method.backbone


# ---- the run ------------------------------------------------------------------------------------------------

# fields that define a study: results made with other values must not be mixed into one table
STUDY_FIELDS = ("data", "budget_minutes", "clock", "preset", "dim", "depth", "heads", "patch_size", "image_size",
                "batch_size", "frozen_fraction", "finetune_lr", "finetune_lr_grid", "layer_decay", "val_fraction",
                "val_max", "knn_k", "knn_temperature", "finetune_min_updates", "recipe_sets")


def check_same_study(cfg: CompareConfig) -> None:
    """Refuse to add results to an --out folder that holds a study with other settings (seeds and methods may be
    added: more of either extends the same table)."""
    path = Path(cfg.out) / "config.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    old.setdefault("finetune_lr_grid", [])  # studies from before the grid used one lr
    old.setdefault("recipe_sets", {})  # ... and from before --set took image recipes: none
    new = dataclasses.asdict(cfg)
    for name in STUDY_FIELDS:
        if name in old and old[name] != (list(new[name]) if isinstance(new[name], tuple) else new[name]):  # JSON
            raise CliError(f"{cfg.out} holds a comparison with {name}={old[name]!r}, this one has {new[name]!r}; "
                           "fix: use another --out folder for other settings (or delete the old results)")


def run_comparison(cfg: CompareConfig) -> dict:
    """Every arm and seed (finished results are skipped), then the report. Returns the summary."""
    import torch

    from ..backbone import build_backbone
    from ..checkpoint import set_seed
    from ..config import get_preset
    from .compare_report import write_report

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    check_same_study(cfg)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    write_json(Path(cfg.out) / "config.json", {**dataclasses.asdict(cfg), "machine": machine_info(),
                                               "finetune_epochs": {str(k): v for k, v in cfg.finetune_epochs.items()}})
    size = data_image_size(cfg)
    t0 = time.time()
    data = load_eval_data(cfg, size)
    say(f"{cfg.data}: {len(data.train_y)} training images ({len(data.val_idx)} of them the validation split), "
        f"{len(data.test_y)} test images, {data.num_classes} classes, {size} px; loaded in {time.time() - t0:.0f} s")
    for name in cfg.methods:  # every method's cost measured back to back, under the same conditions
        calibrate(cfg, name, size, data.in_chans)
    total = len(cfg.seeds) * len(cfg.arms)
    done = 0
    for seed in cfg.seeds:
        set_seed(seed)
        random_backbone = build_backbone(get_preset("vision", cfg.preset,
                                                    **encoder_overrides(cfg, size, data.in_chans)))
        for arm in cfg.arms:
            done += 1
            say(f"[{done}/{total}] {arm} seed {seed}")
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
            write_report(cfg.out)
    return write_report(cfg.out)


# ---- the command --------------------------------------------------------------------------------------------


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="pretrain several methods at an equal budget and compare them against the floors: on an image data set "
        "(k-NN, linear probe, few-label fine-tuning; data2vec, data2vec 2.0, DINO) or a text corpus (--modality text: "
        "GLUE, SQuAD/XQuAD; BERT, data2vec, data2vec 2.0)",
        description="Equal-budget comparison of self-supervised methods on an image data set (described here) or, "
        "with --modality text, a text corpus scored on GLUE and SQuAD/XQuAD (see --glue). Each method's "
        "seconds per update are measured once, its update count fixed to fill --budget-minutes, and every encoder "
        "is scored with the same protocols; the floors (random init, raw pixels, supervised from scratch with the "
        "pretraining + fine-tuning time) are always included. Writes OUT/<arm>/seed<k>/<protocol>.json, "
        "OUT/summary.json, OUT/table.md, OUT/table.txt and OUT/plots/. Rerun the same command to continue: "
        "finished results are skipped. Choosing the budget: what matters is updates x batch; on a CPU core a 4 x 128 "
        "ViT does about 2 data2vec updates per second at batch 64 on 32 px images, so 15 minutes is ~2 epochs of "
        "CIFAR-10 (enough to see frozen features separate from random init, far from the papers' 800 epochs); "
        "a GPU does the same budget ~50x faster, so give it a bigger encoder (--dim 384 --depth 6) and an hour.",
        formatter_class=HelpFormatter)
    p.add_argument("--modality", choices=("vision", "text"), default="vision",
                   help="vision: the image comparison described here; text: BERT-MLM, data2vec and data2vec 2.0 "
                   "pretrained on a text corpus and fine-tuned on GLUE tasks (see --glue)")
    p.add_argument("--data", default=None,
                   help="vision: 'digits' (scikit-learn, no download), a CIFAR-10 or MNIST folder (or .tar.gz), or an "
                   "image folder <root>/<class>/<image> (split 80/20) or <root>/<split>/<class>/<image>; text: the "
                   "pretraining corpus (a .txt file or a folder of them)")
    p.add_argument("--methods", default="data2vec,data2vec2,dino",
                   help="comma-separated pretraining methods (registry names); the floors are always added")
    p.add_argument("--budget-minutes", type=float, default=15.0,
                   help="pretraining time per method and seed; the update count is fixed from a timed calibration "
                   "of every method at the start. On a CPU the time is this process's CPU time (immune to other "
                   "work on the machine; with --threads 1 it equals wall-clock on an idle core), on a GPU wall-clock")
    p.add_argument("--seeds", type=int, default=3, help="seeds per arm (report mean +- std over them); at least 3")
    p.add_argument("--preset", default="mini", choices=("tiny", "mini", "small", "base"),
                   help="the registry preset each method's recipe starts from (the encoder size is --dim/--depth)")
    p.add_argument("--dim", type=int, default=None,
                   help="encoder width shared by every arm (default: vision 128, text 256, the `mini` width)")
    p.add_argument("--depth", type=int, default=4, help="encoder blocks")
    p.add_argument("--heads", type=int, default=4, help="attention heads (must divide --dim)")
    p.add_argument("--patch-size", type=int, default=None, help="patch side in pixels (default 4; 2 under 16 px)")
    p.add_argument("--image-size", type=int, default=None, help="input side (default: the data's)")
    p.add_argument("--batch-size", type=int, default=64, help="pretraining and fine-tuning batch")
    p.add_argument("--finetune-full", action="store_true",
                   help="also fine-tune on all labels (GPU work at CIFAR scale: hours on a CPU)")
    p.add_argument("--finetune-lr-grid", default=None,
                   help="comma-separated fine-tuning lrs, e.g. 1e-3,3e-3,1e-2: every fine-tuning protocol of every arm "
                   "runs once per lr and reports the lr chosen on the validation split (default: 1e-3 for every arm, "
                   "the studies' protocol). Costs len(grid) times the fine-tuning time; worth it when the arms differ "
                   "much (a random-init ViT wants a higher lr than a pretrained one: on 1 %% of MNIST, 27 %% at 1e-3 "
                   "and 60 %% at 3e-3 with the recipe's layer decay 0.75, 67 %% at 3e-3 without it, on validation)")
    p.add_argument("--set", dest="recipe_sets", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="change one method's recipe for a TUNING run (images and text), e.g. --set dino.n_local=0 "
                   "--set dino.teacher_temp=0.02 --set data2vec.lr=1e-3 --set data2vec2.num_masks=4 --set "
                   "bert.mask_prob=0.2 (values parsed as JSON; lr = the peak lr). Use a separate --out per trial: "
                   "its calibration is its own (images: an --out made without the same sets is refused; text: a "
                   "trial that changes only lr or tau_* may start from a copy of the study's calibration.json, so "
                   "it gets the study's update count). Compare trials on the validation scores (carved from the "
                   "training data), never on the test or GLUE dev scores you report")
    p.add_argument("--out", default="runs/compare",
                   help="results folder: one JSON per result, summary, table and plots (small: commit it); "
                   "--quick defaults to runs/compare-quick")
    p.add_argument("--runs", default=None,
                   help="folder of the pretraining/fine-tuning run folders (checkpoints; default OUT/runs: keep it "
                   "out of git)")
    p.add_argument("--report-only", action="store_true",
                   help="only rebuild OUT/summary.json, the tables and the plots from OUT's results files")
    p.add_argument("--quick", action="store_true",
                   help="a smoke version on digits: 1 seed, ~10 s per method, small fine-tuning; a few minutes")
    add_device_and_threads(p, threads_help="torch CPU threads (default: torch's choice); pin it (e.g. 1) when "
                           "other work shares the machine, so the calibrated seconds per update hold for the whole run")
    from .compare_text import add_text_arguments

    add_text_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .common import choose_device
    from .compare_report import write_report
    from .methods import PRETRAINING_METHODS, get_method

    if args.report_only:
        if not Path(args.out).is_dir():
            raise CliError(f"--report-only: {args.out} does not exist; fix: pass the --out of a comparison")
        summary = write_report(args.out)
        print(Path(args.out, "table.txt").read_text())
        return 0 if summary["rows"] else 1
    if args.modality == "text":
        from .compare_text import run_text

        return run_text(args)
    if args.data is None and not args.quick:
        raise CliError("--data is required; fix: pass --data digits, a CIFAR-10/MNIST folder or an image folder, or "
                       "--quick for the digits smoke run")
    args.dim = args.dim or 128
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    for m in methods:
        try:
            spec = get_method(m)
        except ValueError as error:
            raise CliError(f"--methods: {error}") from None
        if m not in PRETRAINING_METHODS or "vision" not in spec.modalities:
            raise CliError(f"--methods: {m} is not an image pretraining method; fix: use some of data2vec, data2vec2, "
                           "dino (the floors random/pixels/supervised are always included)")
    if not methods:
        raise CliError("--methods is empty; fix: e.g. --methods data2vec,data2vec2,dino")
    for flag in ("seeds", "dim", "depth", "heads", "batch_size"):
        if getattr(args, flag) < 1:
            raise CliError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}; fix: pass 1 or more")
    if args.budget_minutes <= 0:
        raise CliError(f"--budget-minutes must be > 0, got {args.budget_minutes}; fix: e.g. --budget-minutes 15")
    if args.dim % args.heads:
        raise CliError(f"--heads {args.heads} does not divide --dim {args.dim}; fix: e.g. --dim 128 --heads 4")
    data = args.data or "digits"
    if data.lower() != "digits" and not Path(data).exists():
        raise CliError(f"--data {data}: no such file or folder; fix: give 'digits' or the path of an image data set")
    fractions = (0.01, 0.1) + ((1.0,) if args.finetune_full else ())
    try:
        lr_grid = tuple(float(x) for x in (args.finetune_lr_grid or "").split(",") if x.strip())
    except ValueError:
        raise CliError(f"--finetune-lr-grid {args.finetune_lr_grid!r}: not comma-separated numbers; fix: e.g. "
                       "--finetune-lr-grid 1e-3,3e-3,1e-2") from None
    if any(lr <= 0 for lr in lr_grid):
        raise CliError(f"--finetune-lr-grid {args.finetune_lr_grid!r}: every lr must be > 0; fix: e.g. "
                       "--finetune-lr-grid 1e-3,3e-3,1e-2")
    if args.quick and args.out == "runs/compare":
        args.out = "runs/compare-quick"  # the smoke run never mixes into a real comparison's folder
    values = dict(data=data, out=args.out, runs=args.runs or str(Path(args.out) / "runs"), methods=methods,
                  budget_minutes=args.budget_minutes, seeds=tuple(range(1, args.seeds + 1)), preset=args.preset,
                  dim=args.dim, depth=args.depth, heads=args.heads, patch_size=args.patch_size,
                  image_size=args.image_size, batch_size=args.batch_size, finetune_fractions=fractions,
                  finetune_lr_grid=lr_grid, recipe_sets=parse_recipe_sets(args.recipe_sets, methods),
                  device=choose_device(args.device), threads=args.threads, quick=args.quick,
                  clock="cpu" if choose_device(args.device) == "cpu" else "wall",
                  command="data2vec " + " ".join(shlex.quote(a) for a in args.argv))
    if args.quick:  # digits, one seed, seconds per method: checks the whole pipeline, numbers not meaningful
        values.update(data="digits", seeds=(1,), budget_minutes=min(args.budget_minutes, 0.15), dim=64, depth=4,
                      calibration_steps=3, finetune_epochs={0.01: 10, 0.1: 5, 1.0: 2}, finetune_min_updates=20,
                      frozen_fraction=0.1)
    cfg = CompareConfig(**values)
    summary = run_comparison(cfg)
    print()
    print(Path(cfg.out, "table.txt").read_text())
    say(f"wrote {len(summary['rows'])} rows to {Path(cfg.out) / 'summary.json'}, table.md, table.txt and plots/")
    return 0
