"""The text study (`data2vec compare --modality text`): BERT-MLM, data2vec and data2vec 2.0 pretrained on one text
corpus at an equal wall-clock budget, then fine-tuned on GLUE tasks with one recipe per task, against random
initialisation of the same encoder and the majority class (docs/design.md section 8).

The protocol
- One tokenizer for every arm: --tokenizer, else a byte-level BPE trained once on the corpus (kept in the runs
  folder, so later sessions reuse it). The corpus's size in words and tokens is stored in OUT/data.json.
- Equal budget: each method's seconds per update (CPU seconds of this process on a CPU, wall-clock on a GPU, as the
  image comparison) are measured by a short timed run (`calibrate_arm`, stored in OUT/calibration.json like the
  image study's, every method back to back before any pretraining), its update count fixed to
  budget / (seconds per update), so the learning-rate and EMA schedules stay functions of the step. Pretraining
  runs with the representation health on (the text anisotropy guard of `data2vec.engine`); a run the guard stops
  is evaluated as it stands and says so.
- Arms: the --methods entries (bert, data2vec, data2vec2) and the floors: random init of the same encoder (every
  protocol) and the majority class of the training labels (GLUE tasks only; STS-B's floor predicts the mean score,
  whose Pearson correlation is 0).
- Validation: a seeded split carved from each task's TRAINING data (stratified for classification, 10 %, at most
  2,000 examples, the same for every arm and seed) chooses the fine-tuning epoch and the probe's C; the GLUE dev set
  is read only to report: the selected epoch's score ("score"), the last epoch's ("last_epoch_score") and, labelled
  as optimistic, the best epoch's on dev itself ("best_on_dev", what `data2vec finetune` keeps when it has no
  validation split; the report prints it in a separate table, never as the score).
- Protocols: "<task>" (fine-tuning, every --tasks entry; SST-2 on a seeded subset of --sst2-train-examples training
  sentences, the same subset for every arm), "sst2-linear" (logistic regression on frozen mean-pooled features,
  C chosen on the validation split), "mlm-heldout" (the bert arm's masked-token accuracy on --heldout text, BERT's
  80/10/10 corruption with a fixed seed).
- Scores (percent): SST-2, RTE accuracy; STS-B Pearson; MRPC the mean of accuracy and F1 (the data2vec paper's
  GLUE table); CoLA Matthews correlation. Every metric of the task is stored in the results file.

Everything is resumable exactly as the image comparison: a results file that exists is never recomputed, a
pretraining run continues from its checkpoint. This file holds the arms' pretraining and the modality's part of
the run (`pipeline.run_comparison`); the settings and recipes are in `text_config`, the budget in `budget`, the
GLUE data and protocols in `glue`, SQuAD/XQuAD in `squad`, the results files in `records`, the report in `report`.

- With --squad: "squad-heldout" and "xquad-<lang>" (SQuAD v1.1 dev split by article, XQuAD zero-shot; the protocol
  is described in `squad`), for --squad-arms (default every arm but the majority class).

Differences from a full study: the fine-tuning recipe is one fixed recipe (lr 1e-4,
RoBERTa's schedule), not tuned per arm.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .budget import calibrate, loss_curve, optim_settings, recipe_of
from .errors import StudyError
from .glue import (
    TaskData,
    check_glue,
    evaluate_majority,
    finetune_task,
    load_task,
    mlm_heldout,
    probe_sst2,
    text_record,
)
from .pretraining import ArmPlan, pretrain_arm_with
from .records import (
    check_same_study,
    machine_info,
    previous_pretrain,
    result_path,
    say,
    write_json,
)
from .squad import SquadData, check_squad, finetune_squad, load_squad_data, record_squad_split, squad_protocols
from .text_config import ANISOTROPY_GUARDED, TextCompareConfig


def text_protocols(cfg: TextCompareConfig, arm: str) -> list[str]:
    """The protocols an arm is scored with: the majority class has only the GLUE tasks; the masked-token accuracy
    needs an MLM head (the bert arm) and a --heldout file."""
    if arm == "majority":
        return list(cfg.tasks)
    names = list(cfg.tasks) + (["sst2-linear"] if "sst2" in cfg.tasks else [])
    if arm == "bert" and cfg.heldout:
        names.append("mlm-heldout")
    return names + squad_protocols(cfg, arm)


# ---- the corpus and the tokenizer -------------------------------------------------------------------------


def load_corpus(cfg: TextCompareConfig):
    """(pretraining blocks, tokenizer, the tokenizer's record): the tokenizer is trained once into
    RUNS/text-data/tokenizer (or loaded from --tokenizer) and reused by every arm, seed and later session."""
    from .data import build_text_data

    folder = Path(cfg.runs) / "text-data"
    own = folder / "tokenizer" / "tokenizer.json"
    return build_text_data(cfg.data, folder, tokenizer=cfg.tokenizer, vocab_size=cfg.vocab_size,
                           seq_len=cfg.seq_len, resume=own.is_file())


def record_corpus(cfg: TextCompareConfig, dataset, tok, info: dict) -> None:
    """OUT/data.json with the corpus's counts (once per study folder), and the corpus line of the log."""
    from .data import text_files

    path = Path(cfg.out) / "data.json"
    if not path.is_file():
        words = 0
        for f in text_files(cfg.data):
            with open(f, encoding="utf-8", errors="replace") as fh:
                words += sum(len(line.split()) for line in fh)
        write_json(path, {**info, "words": words, "tokens": int(dataset.cache.num_tokens),
                          "sentences": int(dataset.cache.num_sentences), "machine": machine_info()})
    counts = json.loads(path.read_text())
    say(f"corpus {cfg.data}: {counts['words']:,} words, {counts['tokens']:,} tokens, {len(dataset):,} blocks of "
        f"{cfg.seq_len}; tokenizer {info['tokenizer']} ({tok.vocab_size} tokens)")


def text_encoder_overrides(cfg: TextCompareConfig, tok) -> dict:
    """The shared encoder's fields (width, depth, heads) and the tokenizer's ids."""
    from .data import text_overrides

    values = dict(text_overrides(tok), dim=cfg.dim, depth=cfg.depth, heads=cfg.heads)
    if tok.style == "bert":  # [CLS] A [SEP] B [SEP] with token types, positions from 0 (as `finetune` does)
        values.update(position_offset=0, type_vocab_size=2)
    return values


# ---- pretraining --------------------------------------------------------------------------------------------


def build_arm(cfg: TextCompareConfig, name: str, tok):
    """(method, optimiser settings, spec) of one method on the shared encoder."""
    from ..methods import get_method
    from ..modalities import TEXT

    spec = get_method(name)
    recipe = recipe_of(cfg, name)
    derived = text_encoder_overrides(cfg, tok)
    if name == "data2vec2":  # its presets fix K for 4 blocks: scale it with --depth (top 5/6, at least 2)
        derived["top_k"] = TEXT.v1_top_k(cfg.depth, reduced=True)
    method = spec.build_fitted("text", cfg.preset, derived, **recipe.overrides)
    return method, optim_settings(recipe, spec.optim["text"], cfg.batch_size), spec


def recipe_record(cfg: TextCompareConfig, name: str) -> dict:
    """The recipe as a text results file records it (text recipes never change the betas)."""
    recipe = recipe_of(cfg, name)
    return {"overrides": recipe.overrides, "lr": recipe.lr}


# --set keys that change numbers but not the work of an update: a trial that changes only these may reuse the
# study's calibration.json (the same update count), so it differs from the study's run in that setting alone
COST_NEUTRAL_SETS = ("lr", "tau_start", "tau_end", "tau_ramp_steps")


def calibration_key(cfg: TextCompareConfig, name: str) -> dict:
    """The settings a stored calibration of `name` is valid for: a different one in the same --out is refused
    (a tuning run's --set changes are part of it when they change the cost of an update; COST_NEUTRAL_SETS do not)."""
    key = {"modality": "text", "clock": cfg.clock, "batch_size": cfg.batch_size, "seq_len": cfg.seq_len,
           "budget_minutes": cfg.budget_minutes, "encoder": [cfg.dim, cfg.depth, cfg.heads], "preset": cfg.preset}
    costly = {k: v for k, v in cfg.recipe_sets.get(name, {}).items() if k not in COST_NEUTRAL_SETS}
    if costly:
        key["recipe_sets"] = costly
    return key


def check_calibration(cfg: TextCompareConfig) -> dict:
    """OUT/calibration.json (empty if none yet); refused when it was measured with other settings, since every
    results file in OUT must come from one budget (checked before any work, even when every result exists)."""
    path = Path(cfg.out) / "calibration.json"
    table = json.loads(path.read_text()) if path.is_file() else {}
    for name in cfg.methods:
        key = calibration_key(cfg, name)
        stored = {k: table[name].get(k) for k in key} if name in table else key
        if stored != key:
            raise StudyError(f"{path} calibrated {name} with {stored}, this run asks for {key}; fix: use the original "
                             "flags, or another --out for a new comparison")
    return table


def calibrate_arm(cfg: TextCompareConfig, name: str, dataset, tok) -> dict:
    """`budget.calibrate` of one method on text blocks, stored with its `calibration_key` (a stored calibration made
    with other settings is refused by `check_calibration`)."""
    check_calibration(cfg)

    def build():
        method, optim, spec = build_arm(cfg, name, tok)
        return method, dataset, None, optim, spec

    return calibrate(cfg, name, build, key=calibration_key(cfg, name), what=f" x {cfg.seq_len} tokens")


def pretrain_arm(cfg: TextCompareConfig, name: str, seed: int, dataset, tok):
    """Pretrain (or continue) one method for one seed (`pretraining.pretrain_arm_with`); writes
    OUT/<name>/seed<k>/pretrain.json with the loss curve and the health curve; returns the method (its backbone
    and, for bert, its MLM head), or None when every evaluation of this (arm, seed) already exists. A run the
    health guard stops is a finding: evaluated as it stands (its weights in memory are its checkpoint's)."""
    from ..checkpoint import load_checkpoint

    def build(steps: int):
        method, optim, spec = build_arm(cfg, name, tok)
        return method, dataset, None, optim, spec

    def load_finished(run_dir: Path):
        if not ((run_dir / "checkpoint").is_dir() or (run_dir / "checkpoint.old").is_dir()):
            return None
        method = build_arm(cfg, name, tok)[0]
        load_checkpoint(run_dir / "checkpoint", model=method)
        return method

    def aborted(error: Exception, steps: int, optim: dict) -> bool:
        say(f"{name} seed {seed}: stopped by the health guard ({error}); evaluating the encoder as it stands")
        return True

    guard = {} if name in ANISOTROPY_GUARDED else {"health_max_anisotropy": 0.0}  # measured, never stopped
    plan = ArmPlan(protocols=text_protocols(cfg, name), calibrate=lambda: calibrate_arm(cfg, name, dataset, tok),
                   build=build, load_finished=load_finished, run_options=lambda: (guard, {}), aborted=aborted,
                   record=lambda *run: pretrain_record(cfg, name, seed, *run), result=lambda method: method)
    return pretrain_arm_with(cfg, name, seed, plan)


def pretrain_record(cfg: TextCompareConfig, name: str, seed: int, method, final: dict, run_dir: Path, steps: int,
                    calib: dict, optim: dict, wall: float, stopped: str | None) -> dict:
    """pretrain.json of a text arm: the budget, the loss curve, the health curve, whether the guard stopped it."""
    from ..engine import read_metrics

    records = read_metrics(run_dir / "metrics.jsonl")
    clock, curve = loss_curve(records, cfg.clock)
    wall_clock = np.cumsum([r["step_time"] + r.get("health/seconds", 0.0) for r in records])  # health included
    health_curve = [{"step": r["step"], "seconds": float(c), **{k.removeprefix("health/"): v for k, v in r.items()
                                                                 if k.startswith("health/") and k != "health/seconds"}}
                    for r, c in zip(records, clock, strict=True) if "health/anisotropy" in r]
    final_loss = final.get("final_loss", records[-1]["loss"] if records else None)
    return {
        **text_record(cfg, name, seed, "pretrain", float("nan"), "pretraining"), "steps": steps,
        "steps_done": len(records), "stopped_by_health_guard": stopped,
        "anisotropy_guard": name in ANISOTROPY_GUARDED, "batch_size": cfg.batch_size,
        "seq_len": cfg.seq_len, "samples_seen": steps * cfg.batch_size, "calibration": calib,
        "train_seconds": float(clock[-1]) if len(clock) else wall, "clock": cfg.clock,
        "train_wall_seconds": float(wall_clock[-1]) if len(wall_clock) else wall, "wall_seconds_this_launch": wall,
        "final_loss": final_loss, "optim": optim,
        "recipe": recipe_record(cfg, name), "curve": curve, "health_curve": health_curve,
        **previous_pretrain(run_dir, final_loss)}


# ---- evaluation ---------------------------------------------------------------------------------------------


def evaluate_encoder(cfg: TextCompareConfig, arm: str, seed: int, backbone, tasks: dict, tok, squad=None) -> None:
    for name in cfg.tasks:
        finetune_task(cfg, arm, seed, backbone, tasks[name], tok)
    if "sst2" in tasks:
        probe_sst2(cfg, arm, seed, backbone, tasks["sst2"], tok)
    if squad is not None and "squad-heldout" in text_protocols(cfg, arm):
        finetune_squad(cfg, arm, seed, backbone, squad, tok)


# ---- the modality's part of the run (`pipeline.run_comparison`) ----------------------------------------------


@dataclass
class TextData:
    """What every arm of a text study reads: the pretraining blocks, the tokenizer, the GLUE tasks, SQuAD."""

    dataset: object  # TokenBlockDataset
    tok: object  # the tokenizer shared by every arm
    tasks: dict  # GLUE task name -> TaskData
    squad: SquadData | None  # None without --squad
    corpus_info: dict  # the tokenizer's record, written into each study folder's data.json


def check(cfg: TextCompareConfig) -> None:
    """Every input and every stored setting, before any work (even when every result exists)."""
    check_glue(cfg)
    check_squad(cfg)
    check_same_study(cfg)
    check_calibration(cfg)


def config_record(cfg: TextCompareConfig) -> dict:
    """OUT/config.json of a text study."""
    return {**dataclasses.asdict(cfg), "modality": "text", "machine": machine_info()}


def random_backbone(cfg: TextCompareConfig, tok):
    """The shared encoder, randomly initialised (the random-init floor)."""
    from ..backbone import build_backbone

    return build_backbone(encoder_config(cfg, tok))


def encoder_config(cfg: TextCompareConfig, tok):
    """The shared encoder's configuration (the tokenizer's ids that only a method reads left out)."""
    from ..config import get_preset

    return get_preset("text", cfg.preset, **{k: v for k, v in text_encoder_overrides(cfg, tok).items()
                                              if k not in ("mask_id", "special_ids")})


def load(cfg: TextCompareConfig) -> TextData:
    """The corpus and tokenizer, every GLUE task encoded once, SQuAD (the same at every budget)."""
    dataset, tok, info = load_corpus(cfg)
    t0 = time.time()
    tasks: dict[str, TaskData] = {name: load_task(cfg, name, tok) for name in cfg.tasks}
    for t in tasks.values():
        say(f"{t.name}: {len(t.fit)} fine-tuning + {len(t.val)} validation examples (of {t.train_examples} training "
            f"examples used), {len(t.dev)} dev examples")
    say(f"GLUE tasks encoded in {time.time() - t0:.0f} s")
    squad = load_squad_data(cfg, tok, encoder_config(cfg, tok)) if cfg.squad else None
    return TextData(dataset, tok, tasks, squad, info)


def prepare(cfg: TextCompareConfig, data: TextData) -> None:
    """The study folder's records of its data (data.json, squad-split.json), the majority-class floor, then every
    method's calibration, back to back under the same conditions (a curve's point reads the curve's)."""
    record_corpus(cfg, data.dataset, data.tok, data.corpus_info)
    if data.squad is not None:
        record_squad_split(cfg, data.squad.split)
    for t in data.tasks.values():
        evaluate_majority(cfg, t)
    for name in cfg.methods:
        calibrate_arm(cfg, name, data.dataset, data.tok)


def scored_arms(cfg: TextCompareConfig) -> tuple[str, ...]:
    """The arms scored per seed (the majority class is scored once, in `prepare`)."""
    return cfg.arms[1:]


def start_seed(cfg: TextCompareConfig, seed: int, data: TextData) -> None:
    """Nothing is shared by the arms of one seed (random init is built when its arm comes)."""
    return None


def score_arm(cfg: TextCompareConfig, arm: str, seed: int, data: TextData, context: None) -> None:
    """Pretrain (methods) or build (random init) one arm's encoder and score it with every protocol."""
    from ..checkpoint import set_seed

    if arm == "random":
        if all(result_path(cfg, arm, seed, p).is_file() for p in text_protocols(cfg, arm)):
            return
        set_seed(seed)
        evaluate_encoder(cfg, arm, seed, random_backbone(cfg, data.tok), data.tasks, data.tok, data.squad)
        return
    method = pretrain_arm(cfg, arm, seed, data.dataset, data.tok)
    if method is not None:
        evaluate_encoder(cfg, arm, seed, method.backbone, data.tasks, data.tok, data.squad)
        if arm == "bert" and cfg.heldout:
            mlm_heldout(cfg, seed, method, data.tok)
