"""`data2vec compare --modality text`: BERT-MLM, data2vec and data2vec 2.0 pretrained on one text corpus at an equal
wall-clock budget, then fine-tuned on GLUE tasks with one recipe per task, against random initialisation of the same
encoder and the majority class (issue 16; ../shared/DESIGN.md section 8).

The protocol
- One tokenizer for every arm: --tokenizer, else a byte-level BPE trained once on the corpus (kept in the runs
  folder, so later sessions reuse it). The corpus's size in words and tokens is stored in OUT/data.json.
- Equal budget: each method's seconds per update (CPU seconds of this process on a CPU, wall-clock on a GPU, as the
  image comparison) are measured by a short timed run (`calibrate_text`, stored in OUT/calibration.json like the
  image comparison's, every method back to back before any pretraining), its update count fixed to
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
pretraining run continues from its checkpoint. This file holds the configuration, the recipes, the equal-budget
pretraining and the run; the GLUE data and protocols are in `compare_glue`, SQuAD/XQuAD in `compare_squad`, the
results files in `compare_records`, the table and plots in `compare_report`.

- With --squad: "squad-heldout" and "xquad-<lang>" (SQuAD v1.1 dev split by article, XQuAD zero-shot; the protocol
  is described in `compare_squad`), for --squad-arms (default every arm but the majority class).

Differences from a full study: the fine-tuning recipe is one fixed recipe (lr 1e-4,
RoBERTa's schedule), not tuned per arm.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .compare import calibration_load, parse_recipe_sets, pretrain_config, step_seconds
from .compare_glue import (
    check_glue,
    evaluate_majority,
    finetune_task,
    load_task,
    mlm_heldout,
    probe_sst2,
    text_record,
    write_synthetic_glue,
)
from .compare_records import (
    machine_info,
    previous_pretrain,
    result_path,
    retire_pretrain_record,
    say,
    write_json,
)
from .errors import CliError, Interrupted

TEXT_METHODS = ("bert", "data2vec", "data2vec2")  # registry names this comparison pretrains
TEXT_TASKS = ("sst2", "stsb", "mrpc", "rte", "cola")  # DESIGN section 8: SST-2 and STS-B carry the signal
# The engine's text anisotropy guard (stop when the tokens' mean cosine stays above 0.6) was set from data2vec runs
# with layer-norm targets; an MLM encoder's final tokens are anisotropic by nature (Ethayarajh 2019: BERT's top
# layers), and the guard stopped a healthy bert run at update 63 of the quick mode, so bert's health is recorded only
ANISOTROPY_GUARDED = ("data2vec", "data2vec2")
# fine-tuning epochs per task (RoBERTa: 10 for all). Measured in the study's first run on one CPU core (the other
# core busy), 4 x 256 at batch 32, the dev set scored after every epoch: an epoch of SST-2 (18k of the 20k
# sentences) 5.2 min, STS-B (sentence pairs, 161 updates of up to 128 tokens) 2.8-4.4 min, so 10 STS-B epochs
# cost 30+ min; random init's STS-B validation peaked at epoch 3 of 10 there, so STS-B gets 5. MRPC/RTE/CoLA carry
# no pretraining signal at this size (DESIGN section 8) and get 3: ~50 min of fine-tuning per arm and seed
TASK_EPOCHS = {"sst2": 3, "stsb": 5, "mrpc": 3, "rte": 3, "cola": 3}


@dataclass(frozen=True)
class TextRecipe:
    """How the comparison trains one registry method on the shared text encoder."""

    overrides: dict = field(default_factory=dict)  # method fields (the encoder's come from TextCompareConfig)
    lr: float | None = None  # peak lr (None = the registry's text default, 5e-4)


# Starting points: the registry's reduced text presets (instance-norm targets for data2vec, tau ramp 0.3 of the run)
RECIPES = {
    "bert": TextRecipe(),  # BERT's 15 % with 80/10/10, RoBERTa-style optimiser
    "data2vec": TextRecipe(),  # REDUCED["text"]: instance norm per layer (layer norm left the tokens anisotropic)
    # data2vec 2.0: 2 masks per sample (released clone_batch: 8) and a 2-block conv decoder (released: 5), priced
    # by benchmarks/studies/text_costs.py: at 4 x 256 and batch 64 x 128 one update cost ~45 s with 8 masks and the
    # 5-block decoder (under 30 updates in 20 minutes), 7.7 s with 2 masks, 6.2 s with 2 masks and 2 blocks (BERT
    # 3.0 s, data2vec 3.7 s), measured while another job shared the cores. A starting point priced, not yet tuned.
    # The `mini` text preset carries the same pair since the study; kept here so that every --preset runs it
    "data2vec2": TextRecipe(overrides=dict(num_masks=2, decoder_layers=2)),
}


@dataclass
class TextCompareConfig:
    """One text comparison: the corpus, the GLUE tasks, the arms, the shared encoder, the budget, the protocols."""

    data: str  # the pretraining corpus: a .txt file, a folder of them, or 'python-docs'
    glue: str  # the GLUE root (one folder per task: SST-2/, STS-B/, ... with train.tsv and dev.tsv)
    out: str  # results folder (JSON per result, table, plots): small, meant to be committed
    runs: str  # run folders (tokenizer, checkpoints): large, keep them out of git
    methods: tuple[str, ...] = TEXT_METHODS  # pretraining arms (registry names)
    tasks: tuple[str, ...] = TEXT_TASKS  # GLUE tasks fine-tuned
    budget_minutes: float = 20.0  # pretraining wall-clock per method and seed
    seeds: tuple[int, ...] = (1, 2, 3)  # one pretraining run and one fine-tuning order per seed
    preset: str = "mini"  # the registry preset each method's recipe starts from
    dim: int = 256  # encoder width (4 x 256 = BERT-Mini, the size DESIGN section 8 quotes)
    depth: int = 4  # encoder blocks
    heads: int = 4  # attention heads
    batch_size: int = 64  # pretraining batch (token blocks of seq_len)
    seq_len: int = 128  # tokens per pretraining block
    vocab_size: int = 8192  # BPE vocabulary trained on the corpus when no tokenizer is given
    tokenizer: str | None = None  # a tokenizer.json (or folder) to use instead of training one
    heldout: str | None = None  # held-out text for the MLM arm's masked-token accuracy (None = that protocol off)
    sst2_train_examples: int | None = 20000  # seeded SST-2 training subset (None = all 67,349)
    task_epochs: dict = field(default_factory=lambda: dict(TASK_EPOCHS))  # fine-tuning epochs per task
    finetune_lr: float = 1e-4  # one recipe for every arm: AdamW, 6 % warm-up, linear decay, wd 0.1 (RoBERTa GLUE)
    finetune_batch_size: int = 32  # RoBERTa GLUE: 16 or 32
    max_length: int = 128  # GLUE tokens per example
    val_fraction: float = 0.1  # validation split carved from each task's training data
    val_max: int = 2000  # at most this many validation examples per task
    calibration_steps: int = 6  # timed updates per method (after 2 untimed ones) that fix the step counts
    heldout_max_blocks: int = 512  # at most this many held-out blocks scored for masked-token accuracy
    squad: str | None = None  # SQuAD v1.1 dev-v1.1.json for the held-out-article protocol (None = off)
    xquad: str | None = None  # folder of xquad.<lang>.json scored zero-shot (needs squad)
    xquad_languages: tuple[str, ...] = ("en", "de", "es")  # Latin-script languages (issue 16 asks these at least)
    squad_arms: tuple[str, ...] | None = None  # arms fine-tuned on SQuAD; None = random and every method
    # the SQuAD recipe for every arm, chosen for a 4 x 256 encoder on a CPU: 3 epochs (BERT: 2-3 on 88k questions; the
    # training half has 4.3k), lr 1e-4 as the GLUE recipe (BERT's 5e-5 and RoBERTa's 1.5e-5 are for 110M-parameter
    # models), batch finetune_batch_size (32, BERT's); one epoch is ~184 updates of ~4 CPU-seconds (32 x 256 tokens)
    squad_epochs: int = 3
    squad_lr: float = 1e-4
    squad_max_length: int | None = None  # tokens per window; None = 384 (BERT) capped at the encoder's positions
    squad_doc_stride: int = 128  # BERT run_squad.py: consecutive windows of a long context start 128 tokens apart
    squad_max_questions: int | None = None  # seeded subset of the training-half questions (None = all)
    squad_eval_max_questions: int | None = None  # seeded subset of each scored set (None = all; --quick only)
    device: str = "cpu"
    clock: str = "cpu"  # the budget's clock, as the image comparison's: "cpu" = this process's CPU seconds (CPU
    #   runs: immune to other work on the machine), "wall" = wall-clock (GPU runs)
    threads: int | None = None  # torch CPU threads (None = torch's choice); recorded with every result
    quick: bool = False  # the smoke version
    command: str = ""  # the command line, stored with every result
    # recipe changes for a tuning run, {method: {field: value}} from --set METHOD.KEY=VALUE ("lr" = the peak lr);
    # empty for the study itself, whose recipes are RECIPES. A tuning run reads the validation table, never dev
    recipe_sets: dict = field(default_factory=dict)

    @property
    def arms(self) -> tuple[str, ...]:
        return ("majority", "random") + tuple(self.methods)

    @property
    def budget_s(self) -> float:
        return 60.0 * self.budget_minutes


def protocols(cfg: TextCompareConfig, arm: str) -> list[str]:
    """The protocols an arm is scored with: the majority class has only the GLUE tasks; the masked-token accuracy
    needs an MLM head (the bert arm) and a --heldout file."""
    from .compare_squad import squad_protocols

    if arm == "majority":
        return list(cfg.tasks)
    names = list(cfg.tasks) + (["sst2-linear"] if "sst2" in cfg.tasks else [])
    if arm == "bert" and cfg.heldout:
        names.append("mlm-heldout")
    return names + squad_protocols(cfg, arm)


# ---- the corpus and the tokenizer -------------------------------------------------------------------------------


def load_corpus(cfg: TextCompareConfig):
    """(pretraining blocks, tokenizer): the tokenizer is trained once into RUNS/text-data/tokenizer (or loaded
    from --tokenizer) and reused by every arm, seed and later session. Writes OUT/data.json with the counts."""
    from .common import build_text_data, text_files

    folder = Path(cfg.runs) / "text-data"
    own = folder / "tokenizer" / "tokenizer.json"
    dataset, tok, info = build_text_data(cfg.data, folder, tokenizer=cfg.tokenizer, vocab_size=cfg.vocab_size,
                                         seq_len=cfg.seq_len, resume=own.is_file())
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
    return dataset, tok


def encoder_overrides(cfg: TextCompareConfig, tok) -> dict:
    """The shared encoder's fields (width, depth, heads) and the tokenizer's ids."""
    from .common import text_overrides

    values = dict(text_overrides(tok), dim=cfg.dim, depth=cfg.depth, heads=cfg.heads)
    if tok.style == "bert":  # [CLS] A [SEP] B [SEP] with token types, positions from 0 (as `finetune` does)
        values.update(position_offset=0, type_vocab_size=2)
    return values


# ---- pretraining --------------------------------------------------------------------------------------------


def recipe_for(cfg: TextCompareConfig, name: str) -> TextRecipe:
    """The method's recipe in this comparison: RECIPES[name] with the --set changes of a tuning run on top."""
    base = RECIPES.get(name, TextRecipe())
    sets = dict(cfg.recipe_sets.get(name, {}))
    lr = sets.pop("lr", base.lr)
    return TextRecipe(overrides={**base.overrides, **sets}, lr=lr)


def build_text_arm(cfg: TextCompareConfig, name: str, tok):
    """(method, optimiser settings, spec) of one method on the shared encoder."""
    from ..modalities import TEXT
    from .methods import get_method
    from .pretrain import build_method

    spec = get_method(name)
    recipe = recipe_for(cfg, name)
    derived = encoder_overrides(cfg, tok)
    if name == "data2vec2":  # its presets fix K for 4 blocks: scale it with --depth (top 5/6, at least 2)
        derived["top_k"] = TEXT.v1_top_k(cfg.depth, reduced=True)
    method = build_method(name, "text", cfg.preset, derived, dict(recipe.overrides))
    defaults = spec.optim["text"]
    optim = dict(lr=recipe.lr if recipe.lr is not None else defaults.scaled_lr(cfg.batch_size),
                 weight_decay=defaults.weight_decay, betas=defaults.betas, clip_norm=defaults.clip_norm)
    return method, optim, spec


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
            raise CliError(f"{path} calibrated {name} with {stored}, this run asks for {key}; fix: use the original "
                           "flags, or another --out for a new comparison")
    return table


def calibrate_text(cfg: TextCompareConfig, name: str, dataset, tok) -> dict:
    """Seconds per update of `name` on text blocks (median of the timed updates of a short run) and the step count
    that fills the budget; stored in OUT/calibration.json (the image comparison's file and layout) and reused."""
    import shutil

    from ..checkpoint import set_seed
    from ..engine import pretrain, read_metrics

    path = Path(cfg.out) / "calibration.json"
    table = check_calibration(cfg)
    if name in table:
        return table[name]
    key = calibration_key(cfg, name)
    n = cfg.calibration_steps + 2
    set_seed(0)
    method, optim, spec = build_text_arm(cfg, name, tok)
    run_dir = Path(cfg.runs) / f"calibrate-{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    say(f"calibrating {name}: {n} updates at batch {cfg.batch_size} x {cfg.seq_len} tokens")
    summary = pretrain(method, dataset, pretrain_config(cfg, optim, n, 0, spec, plots=False, health_every=0,
                                                        warmup_steps=1), run_dir)
    times = [step_seconds(r, cfg.clock) for r in read_metrics(run_dir / "metrics.jsonl")][2:]
    shutil.rmtree(run_dir, ignore_errors=True)
    if summary["stopped_by"]:  # a signal stopped it: store nothing, the next launch measures again
        raise Interrupted(f"the calibration of {name} was stopped by {summary['stopped_by']} after {len(times) + 2} "
                          f"of {n} updates; fix: rerun the same command", summary["stopped_by"])
    s_per_update = float(np.median(times))
    load = calibration_load(cfg, name)
    steps = max(10, int(cfg.budget_s // s_per_update))
    table[name] = {**key, "s_per_update": s_per_update, "steps": steps, "timed_updates": len(times),
                   "load_average": load,
                   "machine": machine_info(), "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json(path, table)
    say(f"{name}: {s_per_update:.3f} s/update -> {steps} updates in {cfg.budget_minutes:g} min")
    return table[name]


def pretrain_text_arm(cfg: TextCompareConfig, name: str, seed: int, dataset, tok):
    """Pretrain (or continue) one method for one seed; writes OUT/<name>/seed<k>/pretrain.json with the loss curve
    and the health curve; returns the method (its backbone and, for bert, its MLM head), or None when every
    evaluation of this (arm, seed) already exists."""
    from ..checkpoint import load_checkpoint, set_seed
    from ..engine import TrainingAborted, pretrain, read_metrics

    summary_path = result_path(cfg, name, seed, "pretrain")
    pending = [p for p in protocols(cfg, name) if not result_path(cfg, name, seed, p).is_file()]
    run_dir = Path(cfg.runs) / f"{name}-seed{seed}"
    has_ckpt = (run_dir / "checkpoint").is_dir() or (run_dir / "checkpoint.old").is_dir()
    if summary_path.is_file() and not pending:
        return None
    if summary_path.is_file() and not has_ckpt:
        retire_pretrain_record(summary_path, run_dir, pending)
    elif summary_path.is_file():
        method = build_text_arm(cfg, name, tok)[0]
        load_checkpoint(run_dir / "checkpoint", model=method)
        return method
    calib = calibrate_text(cfg, name, dataset, tok)
    steps = calib["steps"]
    set_seed(seed)
    method, optim, spec = build_text_arm(cfg, name, tok)
    say(f"pretraining {name} seed {seed}: {steps} updates x batch {cfg.batch_size} (~{cfg.budget_minutes:g} min)"
        + (" (resuming)" if has_ckpt else ""))
    guard = {} if name in ANISOTROPY_GUARDED else {"health_max_anisotropy": 0.0}  # measured, never stopped
    pcfg = pretrain_config(cfg, optim, steps, seed, spec, save_every=max(1, steps // 5),
                           health_every=max(1, steps // 15), quiet=not sys.stdout.isatty(), **guard)
    t0 = time.time()
    stopped = None
    try:
        final = pretrain(method, dataset, pcfg, run_dir, resume=has_ckpt,
                         run_config={"command": "compare", "method": name, "data": cfg.data})
    except TrainingAborted as error:  # the health guard fired: a finding, evaluated as it stands
        stopped, final = str(error), {}
        say(f"{name} seed {seed}: stopped by the health guard ({error}); evaluating the encoder as it stands")
    wall = time.time() - t0
    if final.get("stopped_by"):  # Ctrl-C / SIGTERM: the checkpoint is saved, pretrain.json must wait for the end
        raise Interrupted(f"pretraining {name} seed {seed} stopped by {final['stopped_by']} after update "
                          f"{final.get('steps_done')} of {steps}; fix: rerun the same command to continue from its "
                          "checkpoint", final["stopped_by"])
    records = read_metrics(run_dir / "metrics.jsonl")
    clock = np.cumsum([step_seconds(r, cfg.clock) for r in records])  # budget seconds since the start (no health)
    wall_clock = np.cumsum([r["step_time"] + r.get("health/seconds", 0.0) for r in records])  # health included
    every = max(1, len(records) // 200)
    curve = [{"step": r["step"], "seconds": float(c), "loss": r["loss"]}
             for r, c in zip(records, clock, strict=True)][::every]
    health_curve = [{"step": r["step"], "seconds": float(c), **{k.removeprefix("health/"): v for k, v in r.items()
                                                                 if k.startswith("health/") and k != "health/seconds"}}
                    for r, c in zip(records, clock, strict=True) if "health/anisotropy" in r]
    final_loss = final.get("final_loss", records[-1]["loss"] if records else None)
    write_json(summary_path, {
        **text_record(cfg, name, seed, "pretrain", float("nan"), "pretraining"), "steps": steps,
        "steps_done": len(records), "stopped_by_health_guard": stopped,
        "anisotropy_guard": name in ANISOTROPY_GUARDED, "batch_size": cfg.batch_size,
        "seq_len": cfg.seq_len, "samples_seen": steps * cfg.batch_size, "calibration": calib,
        "train_seconds": float(clock[-1]) if len(clock) else wall, "clock": cfg.clock,
        "train_wall_seconds": float(wall_clock[-1]) if len(wall_clock) else wall, "wall_seconds_this_launch": wall,
        "final_loss": final_loss, "optim": optim,
        "recipe": dataclasses.asdict(recipe_for(cfg, name)), "curve": curve, "health_curve": health_curve,
        **previous_pretrain(run_dir, final_loss)})
    return method  # a stopped run's weights in memory are those its checkpoint holds


# ---- evaluation ---------------------------------------------------------------------------------------------


def evaluate_encoder(cfg: TextCompareConfig, arm: str, seed: int, backbone, tasks: dict, tok, squad=None) -> None:
    from .compare_squad import finetune_squad

    for name in cfg.tasks:
        finetune_task(cfg, arm, seed, backbone, tasks[name], tok)
    if "sst2" in tasks:
        probe_sst2(cfg, arm, seed, backbone, tasks["sst2"], tok)
    if squad is not None and "squad-heldout" in protocols(cfg, arm):
        finetune_squad(cfg, arm, seed, backbone, squad, tok)


# ---- the run ------------------------------------------------------------------------------------------------


# fields that define a text study: results made with other values must not be mixed into one table (methods, seeds,
# tasks and the SQuAD protocol may be added; a task's epoch count may not change once it has a result)
TEXT_STUDY_FIELDS = ("data", "tokenizer", "budget_minutes", "clock", "preset", "dim", "depth", "heads", "batch_size",
                     "seq_len", "vocab_size", "sst2_train_examples", "finetune_lr", "finetune_batch_size", "max_length",
                     "val_fraction", "val_max")


def check_same_text_study(cfg: TextCompareConfig) -> None:
    """Refuse to add results to an --out folder that holds a text study with other settings."""
    path = Path(cfg.out) / "config.json"
    if not path.is_file():
        return
    old, new = json.loads(path.read_text()), dataclasses.asdict(cfg)
    changed = [(name, old[name], new[name]) for name in TEXT_STUDY_FIELDS if name in old and old[name] != new[name]]
    changed += [(f"task_epochs[{task}]", epochs, new["task_epochs"].get(task))
                for task, epochs in old.get("task_epochs", {}).items()
                if new["task_epochs"].get(task) != epochs and any(  # fine-tuned results (the majority has no epochs)
                    f.parent.parent.name != "majority" for f in Path(cfg.out).glob(f"*/seed*/{task}.json"))]
    if changed:
        name, was, now = changed[0]
        raise CliError(f"{cfg.out} holds a text comparison with {name}={was!r}, this one has {now!r}; fix: use the "
                       "original flags, another --out folder, or delete the old results")


def run_text_comparison(cfg: TextCompareConfig) -> dict:
    """Every arm and seed (finished results are skipped), then the report. Returns the summary."""
    import torch

    from ..backbone import build_backbone
    from ..checkpoint import set_seed
    from ..config import get_preset
    from .compare_report import write_report
    from .compare_squad import check_squad, load_squad_data

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    check_glue(cfg)
    check_squad(cfg)
    check_same_text_study(cfg)
    check_calibration(cfg)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    write_json(Path(cfg.out) / "config.json", {**dataclasses.asdict(cfg), "modality": "text",
                                               "machine": machine_info()})
    dataset, tok = load_corpus(cfg)
    t0 = time.time()
    tasks = {name: load_task(cfg, name, tok) for name in cfg.tasks}
    for t in tasks.values():
        say(f"{t.name}: {len(t.fit)} fine-tuning + {len(t.val)} validation examples (of {t.train_examples} training "
            f"examples used), {len(t.dev)} dev examples")
    say(f"GLUE tasks encoded in {time.time() - t0:.0f} s")
    squad = load_squad_data(cfg, tok, get_preset("text", cfg.preset, **{
        k: v for k, v in encoder_overrides(cfg, tok).items() if k not in ("mask_id", "special_ids")})) \
        if cfg.squad else None
    for t in tasks.values():
        evaluate_majority(cfg, t)
    for name in cfg.methods:  # every method's cost measured back to back, under the same conditions
        calibrate_text(cfg, name, dataset, tok)
    total = len(cfg.seeds) * (len(cfg.arms) - 1)
    done = 0
    for seed in cfg.seeds:
        for arm in cfg.arms[1:]:
            done += 1
            say(f"[{done}/{total}] {arm} seed {seed}")
            if arm == "random":
                if all(result_path(cfg, arm, seed, p).is_file() for p in protocols(cfg, arm)):
                    continue
                set_seed(seed)
                backbone = build_backbone(get_preset("text", cfg.preset, **{
                    k: v for k, v in encoder_overrides(cfg, tok).items() if k not in ("mask_id", "special_ids")}))
                evaluate_encoder(cfg, arm, seed, backbone, tasks, tok, squad)
            else:
                method = pretrain_text_arm(cfg, arm, seed, dataset, tok)
                if method is not None:
                    evaluate_encoder(cfg, arm, seed, method.backbone, tasks, tok, squad)
                    if arm == "bert" and cfg.heldout:
                        mlm_heldout(cfg, seed, method, tok)
            write_report(cfg.out)
    return write_report(cfg.out)


# ---- the command --------------------------------------------------------------------------------------------


def add_text_arguments(parser: argparse.ArgumentParser) -> None:
    """The text comparison's own flags, added to `data2vec compare` (the shared ones: --data is the corpus,
    --methods, --budget-minutes, --seeds, --preset, --dim/--depth/--heads, --batch-size, --out, --runs, --quick,
    --device, --threads)."""
    g = parser.add_argument_group(
        "text (--modality text)",
        "BERT-MLM, data2vec and data2vec 2.0 pretrained on --data (a text corpus) at an equal budget, fine-tuned on "
        "GLUE with one recipe per task; floors: random init and the majority class. Methods: bert, data2vec, "
        "data2vec2. The study uses --dim 256 --depth 4 --heads 4 (BERT-Mini, DESIGN section 8) and at least 20 "
        "minutes per method. Choosing the budget: on one CPU core at --batch-size 64 and --seq-len 128 the study's "
        "calibration measured 3.3 s per update (bert), 4.1 s (data2vec) and 5.8 s (data2vec2 with the "
        "comparison's 2 masks and 2-block decoder; ~45 s with the released 8 masks and 5 blocks), so 20 minutes "
        "is 365 / 294 / 206 updates, 1.2 / 1.0 / 0.7 passes over the study corpus's 19k blocks of 128 tokens: "
        "far from BERT-Mini's billions of words, expect small gaps over random init")
    g.add_argument("--glue", default=None,
                   help="the GLUE root (SST-2/, STS-B/, MRPC/, RTE/, CoLA/ with train.tsv and dev.tsv); --quick "
                   "without it writes a tiny synthetic SST-2/STS-B folder")
    g.add_argument("--tasks", default=",".join(TEXT_TASKS),
                   help="comma-separated GLUE tasks to fine-tune; SST-2 and STS-B carry the signal at 4 x 256, "
                   "MRPC/RTE/CoLA are reported beside their majority class")
    g.add_argument("--tokenizer", default=None,
                   help="a tokenizer.json (or folder) shared by every arm; default: a byte-level BPE of "
                   "--vocab-size trained once on --data and kept in RUNS/text-data/tokenizer")
    g.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary trained on --data (about 8k)")
    g.add_argument("--seq-len", type=int, default=128, help="tokens per pretraining block (at most 256 for mini)")
    g.add_argument("--sst2-train-examples", type=int, default=20000,
                   help="seeded SST-2 training subset (the same for every arm); 0 = all 67,349 (3x the time)")
    g.add_argument("--task-epochs", default=None,
                   help="fine-tuning epochs per task, e.g. sst2=3,stsb=10 (default: sst2 3, stsb 5, mrpc/rte/cola 3; "
                   "at 4 x 256 on one CPU core that is ~50 min of fine-tuning per arm and seed, a third of it SST-2)")
    g.add_argument("--finetune-lr", type=float, default=1e-4,
                   help="peak fine-tuning lr of every arm (small encoders want 1e-4 to 3e-4, not RoBERTa's 2e-5)")
    g.add_argument("--heldout", default=None,
                   help="held-out text (e.g. the corpus builder's heldout.txt) for the bert arm's masked-token "
                   "accuracy; without it that protocol is skipped")
    from .compare_squad import add_squad_arguments

    add_squad_arguments(parser)


def parse_epochs(text: str | None) -> dict:
    epochs = dict(TASK_EPOCHS)
    for item in (text or "").split(","):
        if not item.strip():
            continue
        task, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit() or int(value) < 1:
            raise CliError(f"--task-epochs {item!r} is not TASK=N with N >= 1; fix: e.g. --task-epochs sst2=3,stsb=10")
        epochs[task.strip().lower()] = int(value)
    return epochs


def text_config(args: argparse.Namespace) -> TextCompareConfig:
    """The flags checked and turned into a TextCompareConfig (bad input is a one-line CliError)."""
    from tasks.text.glue import get_task

    from .common import PYTHON_DOCS, choose_device
    from .compare_squad import squad_values

    args.dim = args.dim or 256  # the `mini` text width
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if args.methods == "data2vec,data2vec2,dino":  # the image default left in place: the text arms instead
        methods = TEXT_METHODS
    for m in methods:
        if m not in TEXT_METHODS:
            raise CliError(f"--methods: {m} is not a text pretraining method; fix: use some of "
                           f"{', '.join(TEXT_METHODS)} (the floors random/majority are always included)")
    if not methods:
        raise CliError("--methods is empty; fix: e.g. --methods bert,data2vec,data2vec2")
    try:
        tasks = tuple(get_task(t.strip()).name for t in args.tasks.split(",") if t.strip())
    except ValueError as error:
        raise CliError(f"--tasks: {error}") from None
    if not tasks:
        raise CliError("--tasks is empty; fix: e.g. --tasks sst2,stsb")
    for flag in ("seeds", "dim", "depth", "heads", "batch_size", "seq_len", "vocab_size"):
        if getattr(args, flag) < 1:
            raise CliError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}; fix: pass 1 or more")
    if args.budget_minutes <= 0:
        raise CliError(f"--budget-minutes must be > 0, got {args.budget_minutes}; fix: e.g. --budget-minutes 15")
    if args.dim % args.heads:
        raise CliError(f"--heads {args.heads} does not divide --dim {args.dim}; fix: e.g. --dim 256 --heads 4")
    if args.finetune_lr <= 0:
        raise CliError(f"--finetune-lr must be > 0, got {args.finetune_lr}; fix: e.g. 1e-4")
    if args.sst2_train_examples < 0:
        raise CliError(f"--sst2-train-examples must be >= 0 (0 = all), got {args.sst2_train_examples}; fix: pass 0 "
                       "or a number of examples")
    if args.heldout and not Path(args.heldout).is_file():
        raise CliError(f"--heldout {args.heldout}: no such file; fix: give a text file held out of the corpus")
    runs = args.runs or str(Path(args.out) / "runs")
    data, glue, heldout = args.data, args.glue, args.heldout
    if args.quick:
        data = data or PYTHON_DOCS
        if glue is None:
            glue = str(write_synthetic_glue(Path(runs) / "synthetic-glue"))
            say(f"--quick: no --glue given, so SST-2 and STS-B are a tiny SYNTHETIC folder ({glue}); the numbers "
                "only show that the pipeline runs")
            tasks = tuple(t for t in tasks if t in ("sst2", "stsb")) or ("sst2", "stsb")
            heldout = heldout or str(Path(glue) / "heldout.txt")
    if data is None:
        raise CliError("--modality text needs --data; fix: pass the pretraining corpus (a .txt file, a folder of them "
                       "or python-docs), or --quick")
    if glue is None:
        raise CliError("--modality text needs --glue; fix: pass the GLUE root (with SST-2/, STS-B/, ...), or --quick")
    if str(data) != PYTHON_DOCS and not Path(data).exists():
        raise CliError(f"--data {data}: no such file or folder; fix: give a text corpus (.txt file or folder)")
    values = dict(data=str(data), glue=str(glue), out=args.out, runs=runs, methods=methods, tasks=tasks,
                  budget_minutes=args.budget_minutes, seeds=tuple(range(1, args.seeds + 1)), preset=args.preset,
                  dim=args.dim, depth=args.depth, heads=args.heads, batch_size=args.batch_size, seq_len=args.seq_len,
                  vocab_size=args.vocab_size, tokenizer=args.tokenizer, heldout=heldout,
                  sst2_train_examples=args.sst2_train_examples or None, task_epochs=parse_epochs(args.task_epochs),
                  finetune_lr=args.finetune_lr, device=choose_device(args.device), threads=args.threads,
                  clock="cpu" if choose_device(args.device) == "cpu" else "wall",
                  quick=args.quick, command="data2vec " + " ".join(shlex.quote(a) for a in args.argv),
                  recipe_sets=parse_recipe_sets(getattr(args, "recipe_sets", []), methods),
                  **squad_values(args, ("random",) + methods))
    if args.quick:  # seconds per method on a tiny encoder: checks the whole pipeline, numbers not meaningful
        values.update(seeds=(1,), budget_minutes=min(args.budget_minutes, 0.1), dim=64, depth=2, heads=2,
                      batch_size=16, seq_len=64, vocab_size=min(args.vocab_size, 2000), calibration_steps=3,
                      task_epochs={t: 2 for t in TEXT_TASKS}, sst2_train_examples=2000, heldout_max_blocks=64,
                      squad_epochs=1, squad_max_length=128, squad_eval_max_questions=100,
                      squad_max_questions=min(args.squad_max_questions or 200, 200))
    return TextCompareConfig(**values)


def run_text(args: argparse.Namespace) -> int:
    cfg = text_config(args)
    summary = run_text_comparison(cfg)
    print()
    print(Path(cfg.out, "table.txt").read_text())
    say(f"wrote {len(summary['rows'])} rows to {Path(cfg.out) / 'summary.json'}, table.md, table.txt and plots/")
    return 0
