"""The speech study (`data2vec compare --modality audio`): data2vec and data2vec 2.0 pretrained on the training speech
of a keyword corpus at an equal CPU budget, every encoder scored with the same protocols against random init, a
raw-feature floor (log-mel / MFCC) and supervised training from scratch (docs/design.md sections 8 and 10).

The protocol (the image study's, `data2vec.study.vision`, with speech's data)
- Equal budget: each method's seconds per update are measured once by a short timed run (`budget.calibrate`, stored
  in OUT/calibration.json, every method back to back before any pretraining), its update count fixed to
  budget / (seconds per update), so the learning-rate and EMA schedules stay functions of the step.
- Pretraining data: the unlabelled TRAINING split only (`study.data.build_audio_data`: the keyword clips of the
  training speakers and, for a built corpus, their sentences), random crops of `crop_seconds`; validation and test
  speakers are never heard. The representation health pass runs; a run its guard stops is scored as it stands and
  says so (a collapsed encoder is that method's result at that budget).
- Arms: every `--methods` entry (data2vec, data2vec2) and the floors: random init (the same encoder, untrained),
  the hand-made features (frozen protocols only) and supervised from scratch (fine-tuning protocols only).
- Protocols and validation: `audio_protocols` (frozen k-NN and linear probe with all labels and a fraction of them,
  fine-tuning with 1 % and 10 % of the labels; every choice on validation speakers carved from the training split).

Everything is resumable as the image study: a results file that exists is never recomputed, a pretraining run
continues from its checkpoint, and `--report-only` rebuilds the table and plots from the results files alone.

Differences from the papers: data2vec-audio pretrains on 960 h of LibriSpeech and fine-tunes for speech recognition;
here minutes of synthetic keywords and sentences, scored on keyword spotting, at an equal budget per method.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from .audio_config import AudioCompareConfig
from .audio_protocols import (
    AudioEvalData,
    audio_protocols,
    evaluate_finetune,
    evaluate_frozen,
    evaluate_supervised,
    load_eval_data,
)
from .budget import calibrate, loss_curve, optim_settings, recipe_of
from .pretraining import ArmPlan, pretrain_arm_with
from .records import check_same_study, machine_info, previous_pretrain, record, say

# ---- pretraining --------------------------------------------------------------------------------------------


def encoder_overrides(cfg: AudioCompareConfig) -> dict:
    """The shared encoder's fields: width, depth, heads and the feature encoder's channels."""
    return dict(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, conv_dim=cfg.conv_dim)


def build_arm(cfg: AudioCompareConfig, name: str):
    """(method, pretraining dataset, collate function, optimiser settings, spec) of one method on the shared
    encoder, reading the training speech in crops of `crop_seconds`."""
    from ..methods import get_method
    from .data import build_audio_data

    spec = get_method(name)
    recipe = recipe_of(cfg, name)
    method = spec.build("audio", cfg.preset, **{**encoder_overrides(cfg), **recipe.overrides})
    dataset, _, collate = build_audio_data(cfg.data, crop_seconds=cfg.crop_seconds)
    return method, dataset, collate, optim_settings(recipe, spec.optim["audio"], cfg.batch_size), spec


def calibrate_arm(cfg: AudioCompareConfig, name: str) -> dict:
    """`budget.calibrate` of one method on this study's encoder and speech."""
    return calibrate(cfg, name, lambda: build_arm(cfg, name), what=f" x {cfg.crop_seconds:g} s")


def pretrain_arm(cfg: AudioCompareConfig, name: str, seed: int):
    """Pretrain (or continue) one method for one seed (`pretraining.pretrain_arm_with`); writes
    OUT/<name>/seed<k>/pretrain.json; returns the student backbone, or None when every evaluation of this
    (arm, seed) already exists."""
    from ..hub import load_pretrained

    def load_finished(run_dir: Path):
        return load_pretrained(run_dir).backbone if (run_dir / "checkpoint").is_dir() else None

    def aborted(error: Exception, steps: int, optim: dict) -> bool:  # the health guard: scored as it stands
        say(f"{name} seed {seed}: stopped by the health guard ({error}); scoring the encoder as it stands")
        return True

    plan = ArmPlan(protocols=audio_protocols(cfg, name), calibrate=lambda: calibrate_arm(cfg, name),
                   build=lambda steps: build_arm(cfg, name), load_finished=load_finished,
                   run_options=lambda: ({}, {}), aborted=aborted,
                   record=lambda *run: pretrain_record(cfg, name, seed, *run), result=lambda method: method.backbone)
    return pretrain_arm_with(cfg, name, seed, plan)


def pretrain_record(cfg: AudioCompareConfig, name: str, seed: int, method, final: dict, run_dir: Path, steps: int,
                    calib: dict, optim: dict, wall: float, stopped: str | None) -> dict:
    """pretrain.json of a speech arm: the budget, the loss curve, the health curve, whether the guard stopped it."""
    from ..engine import read_metrics

    records = read_metrics(run_dir / "metrics.jsonl")
    clock, curve = loss_curve(records, cfg.clock)
    health_curve = [{"step": r["step"], "seconds": float(c), **{k.removeprefix("health/"): v for k, v in r.items()
                                                                 if k.startswith("health/") and k != "health/seconds"}}
                    for r, c in zip(records, clock, strict=True) if "health/anisotropy" in r]
    final_loss = final.get("final_loss", records[-1]["loss"] if records else None)
    return {
        **record(cfg, name, seed, "pretrain", float("nan")), "metric": "pretraining", "steps": steps,
        "steps_done": len(records), "stopped_by_health_guard": stopped, "batch_size": cfg.batch_size,
        "crop_seconds": cfg.crop_seconds, "samples_seen": steps * cfg.batch_size, "calibration": calib,
        "train_seconds": float(clock[-1]) if len(clock) else wall, "clock": cfg.clock,
        "train_wall_seconds": float(sum(r["step_time"] for r in records)), "wall_seconds_this_launch": wall,
        "final_loss": final_loss, "optim": optim, "recipe": dataclasses.asdict(recipe_of(cfg, name)),
        "curve": curve, "health_curve": health_curve, **previous_pretrain(run_dir, final_loss),
        **({"warning": f"the health guard stopped it ({stopped})"} if stopped else {})}


# ---- the modality's part of the run (`pipeline.run_comparison`) ----------------------------------------------


def check(cfg: AudioCompareConfig) -> None:
    """The stored settings, before any work."""
    check_same_study(cfg)


def config_record(cfg: AudioCompareConfig) -> dict:
    """OUT/config.json of a speech study (JSON keys are strings: the epochs per fraction keyed by str)."""
    return {**dataclasses.asdict(cfg), "modality": "audio", "machine": machine_info(),
            "finetune_epochs": {str(k): v for k, v in cfg.finetune_epochs.items()}}


def load(cfg: AudioCompareConfig) -> AudioEvalData:
    """The evaluation clips in memory and the validation speakers (the same at every budget)."""
    t0 = time.time()
    data = load_eval_data(cfg)
    say(f"{cfg.data}: {len(data.train_y)} training clips ({len(data.val_idx)} of them the validation split, "
        f"{len(set(data.speakers[data.val_idx]))} speakers), {len(data.test_y)} test clips, {data.num_classes} "
        f"classes, {cfg.crop_seconds:g} s each; loaded in {time.time() - t0:.0f} s")
    return data


def prepare(cfg: AudioCompareConfig, data: AudioEvalData) -> None:
    """Every method's calibration, back to back under the same conditions (a curve's point reads the curve's)."""
    for name in cfg.methods:
        calibrate_arm(cfg, name)


def scored_arms(cfg: AudioCompareConfig) -> tuple[str, ...]:
    return cfg.arms


def start_seed(cfg: AudioCompareConfig, seed: int, data: AudioEvalData):
    """The seed's random-init encoder, shared by the random floor and the supervised one."""
    from ..backbone import build_backbone
    from ..checkpoint import set_seed
    from ..config import get_preset

    set_seed(seed)
    return build_backbone(get_preset("audio", cfg.preset, **encoder_overrides(cfg)))


def score_arm(cfg: AudioCompareConfig, arm: str, seed: int, data: AudioEvalData, random_backbone) -> None:
    """Score one arm: the floors with their protocols, a method after its pretraining."""
    if arm == "random":
        evaluate_frozen(cfg, arm, seed, random_backbone, data)
        evaluate_finetune(cfg, arm, seed, random_backbone, data)
    elif arm == "features":
        evaluate_frozen(cfg, arm, seed, None, data)
    elif arm == "supervised":
        evaluate_supervised(cfg, seed, data, random_backbone)
    else:
        backbone = pretrain_arm(cfg, arm, seed)
        if backbone is not None:
            evaluate_frozen(cfg, arm, seed, backbone, data)
            evaluate_finetune(cfg, arm, seed, backbone, data)
