"""The equal budget of a study, shared by every modality: the recipes an arm trains with, the timed calibration
that turns a wall-clock budget into an update count, and the pretraining settings of an arm.

Equal budget (docs/design.md section 8): each method's seconds per update are measured once by a short timed run
(`calibrate`), then its update count is fixed to budget / (seconds per update), so the learning-rate and EMA
schedules stay functions of the step. The calibration is stored in OUT/calibration.json and reused by every seed and
every later session. On a CPU the clock is this process's CPU time (immune to other work on the machine), on a GPU
wall-clock.

Differences from the papers: they compare methods at equal epochs on large hardware; the budget in seconds is this
project's own way to compare at reduced scale.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import StudyInterrupted
from .records import machine_info, say, write_json


@dataclass(frozen=True)
class Recipe:
    """How a study trains one registry method on its shared encoder: method fields and optimiser changes."""

    overrides: dict = field(default_factory=dict)  # method fields (the encoder's come from the study's config)
    lr: float | None = None  # peak lr at the study's batch (None = the registry's default for the batch)
    betas: tuple[float, float] | None = None  # None = the registry's


def recipe_of(cfg, name: str) -> Recipe:
    """The study's recipe of `name` (cfg.recipes) with a tuning run's `--set` changes on top (`cfg.recipe_sets`:
    "lr" = the peak lr, the rest are config fields)."""
    base = cfg.recipes.get(name, Recipe())
    sets = dict(cfg.recipe_sets.get(name, {}))
    lr = sets.pop("lr", base.lr)
    return dataclasses.replace(base, overrides={**base.overrides, **sets}, lr=lr)


def optim_settings(recipe: Recipe, defaults, batch_size: int) -> dict:
    """The optimiser of an arm: the recipe's lr and betas where it sets them, else the registry's defaults."""
    lr = recipe.lr if recipe.lr is not None else defaults.scaled_lr(batch_size)
    return dict(lr=lr, weight_decay=defaults.weight_decay, betas=recipe.betas or defaults.betas,
                clip_norm=defaults.clip_norm)


def pretrain_config(cfg, optim: dict, steps: int, seed: int, spec, **extra):
    """The `engine.PretrainConfig` of one arm: the study's batch and device, the arm's optimiser, cosine to lr/100."""
    from ..engine import PretrainConfig

    values = dict(steps=steps, batch_size=cfg.batch_size, lr=optim["lr"], min_lr=optim["lr"] / 100,
                  weight_decay=optim["weight_decay"], betas=optim["betas"], clip_norm=optim["clip_norm"], seed=seed,
                  device=cfg.device, quiet=True, log_every=0, find_unused_parameters=spec.find_unused_parameters,
                  plots=False, **compute_settings(cfg))  # the study draws its own curves (plots cost seconds)
    values.update(extra)
    return PretrainConfig(**values)


def compute_settings(cfg) -> dict:
    """The study's precision and compilation as the engines' fields (`PretrainConfig` and `FinetuneConfig` share
    them): one precision for every arm of a table."""
    return {"bf16": cfg.precision == "bf16", "compile": cfg.compile}


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


def calibration_table(cfg) -> dict:
    """OUT/calibration.json ({} before the first calibration)."""
    path = Path(cfg.out) / "calibration.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def calibrate(cfg, name: str, build: Callable[[], tuple], key: dict | None = None, what: str = "") -> dict:
    """Seconds per update of `name`, measured by a short run (median of the timed updates after 2 untimed ones),
    and the step count that fills the budget. `build()` returns (method, dataset, collate, optim, spec) of the arm;
    `key` the settings the entry is valid for (stored with it); `what` describes a batch in the log. Stored in
    OUT/calibration.json and reused, so every seed and session runs the same updates."""
    from ..checkpoint import set_seed
    from ..engine import pretrain, read_metrics

    table = calibration_table(cfg)
    if name in table:
        return table[name]
    n = cfg.calibration_steps + 2
    set_seed(0)
    method, dataset, collate, optim, spec = build()
    run_dir = Path(cfg.runs) / f"calibrate-{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    say(f"calibrating {name}: {n} updates at batch {cfg.batch_size}{what}")
    summary = pretrain(method, dataset, pretrain_config(cfg, optim, n, 0, spec, plots=False, health_every=0,
                                                        warmup_steps=1), run_dir, collate_fn=collate)
    times = [step_seconds(r, cfg.clock) for r in read_metrics(run_dir / "metrics.jsonl")][2:]
    shutil.rmtree(run_dir, ignore_errors=True)
    if summary["stopped_by"]:  # a signal stopped it: store nothing, the next launch measures again
        raise StudyInterrupted(f"the calibration of {name} was stopped by {summary['stopped_by']} after "
                               f"{len(times) + 2} of {n} updates; fix: rerun the same command to continue (finished "
                               "results are kept)", summary["stopped_by"])
    s_per_update = float(np.median(times))
    load = calibration_load(cfg, name)
    steps = max(10, int(cfg.budget_s // s_per_update))
    measured = {"s_per_update": s_per_update, "steps": steps, "timed_updates": len(times), "load_average": load,
                "machine": machine_info(), "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    if key is None:  # the image study's layout
        table[name] = {"s_per_update": s_per_update, "clock": cfg.clock, "steps": steps,
                       "batch_size": cfg.batch_size, "budget_minutes": cfg.budget_minutes, **measured}
    else:
        table[name] = {**key, **measured}
    write_json(Path(cfg.out) / "calibration.json", table)
    say(f"{name}: {s_per_update:.3f} s/update -> {steps} updates in {cfg.budget_minutes:g} min")
    return table[name]


def pretraining_stopped(name: str, seed: int, final: dict, steps: int) -> None:
    """Raise StudyInterrupted when Ctrl-C / SIGTERM stopped an arm's pretraining: its checkpoint is saved and a
    half-trained encoder is not scored."""
    if final.get("stopped_by"):
        raise StudyInterrupted(f"pretraining {name} seed {seed} stopped by {final['stopped_by']} after update "
                               f"{final.get('steps_done')} of {steps}; fix: rerun the same command to continue from "
                               "its checkpoint (finished results are kept)", final["stopped_by"])


def loss_curve(records: list[dict], clock: str) -> tuple[np.ndarray, list[dict]]:
    """(budget seconds since the start at every update, the loss curve thinned to about 200 points)."""
    seconds = np.cumsum([step_seconds(r, clock) for r in records])  # health passes excluded
    every = max(1, len(records) // 200)
    curve = [{"step": r["step"], "seconds": float(c), "loss": r["loss"]}
             for r, c in zip(records, seconds, strict=True)][::every]
    return seconds, curve
