"""The one pretraining loop for every method (data2vec v1 and 2.0, BERT, DINO), in named steps.

`pretrain(method, data, cfg, out_dir)` reads: set up the run (`start_run`: device, optimiser, schedule, resume
or a fresh start, the data order) -> per update: learning rate from the schedule -> `train_step` (forward and
backward over the micro-batches, the gradient clipped, the statistics reduced over ranks and moved to the
host once) -> `step_or_skip` (the optimiser step and the method's `step_hook`, or a skipped non-finite update)
-> `health_pass` (every `health_every` updates: the student's features on a fixed probe batch, health/* in
metrics.jsonl; diagnostics.py, docs/health.md) -> `log_step` (metrics.jsonl, progress) -> `stop_if_collapsed`
(the health guard) -> `stop_if_diverged` -> `maybe_save` (periodic, on SIGINT/SIGTERM, at the end).
The method's `step_hook` (the EMA teacher) runs right after the optimiser step (data2vec paper
arXiv 2202.03555, section 3.2: the teacher follows the updated student).

The method is any `nn.Module` that follows `PretrainMethod`; the engine never imports a method module.
The pieces live beside it: `optim.py` (AdamW groups), `sampling.py` (the seeded, sharded, resumable data
order that makes `--resume` and the 1-vs-N-process comparison exact), `metrics.py` (metrics.jsonl, plots),
`checkpoint.py` (atomic checkpoints), `distributed.py` (DDP), `schedules.py` (learning rates).

Differences from the original: fairseq/BEiT keep one global RNG stream per worker (resuming replays or
re-seeds it approximately); here every shard is seeded explicitly (`sampling.py`). A non-finite loss skips the
update (like fairseq's overflow handling) and training stops after `max_nonfinite` in a row instead of
continuing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, default_collate

from . import distributed as dist_utils
from .checkpoint import atomic_write_text, get_rng_state, load_checkpoint, save_checkpoint, set_rng_state, set_seed
from .config import config_error
from .devices import resolve_device, to_device
from .diagnostics import CollapseError, CollapseGuard, LabelledProbe, backbone_features, health_statistics, online_knn
from .metrics import MetricsLog, json_value, read_metrics, write_plots
from .optim import build_optimizer
from .sampling import SeededItems, ShardSampler, mix_seed, seed_all, shard_seed
from .schedules import SCHEDULES, LRSchedule

__all__ = ["LabelledProbe", "PretrainConfig", "PretrainMethod", "TrainingAborted", "pretrain", "read_metrics",
           "write_plots"]


class PretrainMethod(Protocol):
    """What `pretrain` needs of a method, besides being an `nn.Module` (data2vec.v1.Data2Vec,
    data2vec.v2.Data2Vec2, baselines.BertMLM, baselines.DINO all follow it)."""

    cfg: Any  # the method's dataclass configuration (saved in config.json and checked on --resume)
    backbone: nn.Module  # the student encoder that fine-tuning keeps

    def forward(self, batch: Any) -> tuple[Tensor, dict[str, Tensor | float]]:
        """-> (loss, statistics): 0-dim tensors or floats; the engine reduces and moves them in one transfer."""
        ...

    def step_hook(self, step: int, total_steps: int) -> dict[str, float]:
        """Called right after optimiser step `step` (0-based): the EMA teacher update; returns values to log."""
        ...


# ---- configuration --------------------------------------------------------------------------------
@dataclass
class PretrainConfig:
    """Everything the loop needs; defaults follow data2vec-text (paper section 4.2, released config)."""

    steps: int = 1000  # optimiser updates (the paper: 1M text, 800 epochs vision; CPU runs: hundreds)
    batch_size: int = 32  # samples per process per micro-batch; global = batch_size * grad_accum * world
    grad_accum: int = 1  # micro-batches per update (raise it to reach a larger global batch on one device)
    lr: float = 2e-4  # peak lr (text 2e-4, vision 2e-3 at batch 2048); scale it linearly with the global batch
    min_lr: float = 0.0  # final lr of the cosine (vision: 1e-5)
    warmup_steps: int | None = None  # None = 10% of `steps`; fewer steps of warm-up often diverge
    weight_decay: float = 0.01  # AdamW decay (text 0.01, vision 0.05), never on biases/norms/tokens/positions
    betas: tuple[float, float] = (0.9, 0.98)  # Adam betas (text 0.9/0.98, vision 0.9/0.999)
    eps: float = 1e-6  # Adam epsilon (fairseq/data2vec 1e-6)
    clip_norm: float = 5.0  # max gradient L2 norm (text 5 released, vision 3); 0 = no clipping
    schedule: str = "cosine"  # "cosine" (warm-up then cosine), "tri_stage" (fairseq) or "constant"
    tri_stage_fracs: tuple[float, float, float] = (0.1, 0.4, 0.5)  # warm-up/hold/decay fractions (fairseq)
    bf16: bool = False  # bf16 autocast (CUDA and CPU); EMA teacher and optimiser stay fp32
    compile: bool = False  # torch.compile the method's forward (faster on GPU after a slow first step)
    save_every: int = 0  # checkpoint every N updates (0 = only at the end and on SIGINT/SIGTERM)
    log_every: int = 10  # console line every N updates (metrics.jsonl always has every update)
    max_nonfinite: int = 5  # stop after this many non-finite losses in a row (each one skips its update)
    seed: int = 1  # seeds init, data order, masks, dropout and augmentations
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    num_workers: int = 0  # DataLoader workers (each sample is seeded, so results do not depend on it)
    find_unused_parameters: bool = False  # DDP: needed when some trainable parameter gets no gradient (DINO)
    quiet: bool = False  # no progress bar / console lines
    plots: bool = True  # write plots/*.png at each checkpoint and at the end
    # representation health (docs/health.md): a pass over a fixed probe batch after update 1, every
    # `health_every` updates and after the last one; it never touches the training RNG or the losses
    health_every: int = 100  # updates between health passes (0 = off); measured overhead in docs/health.md
    health_probe_size: int = 64  # samples in the fixed probe batch (seeded indices of the data, same on resume)
    health_max_anisotropy: float = 0.6  # text runs: stop when the probe tokens' mean cosine stays above this
    #   (0 = off); measured after the warm-up (docs/health.md): healthy 0.14-0.45, layer-norm targets 0.67-0.97.
    #   Not applied to images (random init: 0.001 ViT of data2vec/DINO, 0.74 data2vec 2.0's: no common bound)
    health_min_effective_rank: float = 0.0  # stop when RankMe / min(N, D) of the probe tokens (a FRACTION of the
    #   width D for a probe of more tokens than D) stays below this (0 = off, the default: healthy mini vision
    #   runs measured 0.017 from random init, text 0.44-0.64 healthy vs 0.26-0.36 layer-norm; docs/health.md)
    health_warmup_steps: int | None = None  # updates before the health thresholds apply (None = 5 x the lr
    #   warm-up: healthy text runs pass a transient of up to 0.99 around the lr peak and settle by ~4x it)
    health_patience: int = 2  # consecutive health passes past a threshold before the run stops

    @property
    def resolved_warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else max(1, self.steps // 10)

    @property
    def resolved_health_warmup(self) -> int:
        return self.health_warmup_steps if self.health_warmup_steps is not None else 5 * self.resolved_warmup

    def validate(self) -> None:
        def fail(field_name, problem, fix):
            raise config_error("PretrainConfig", field_name, problem, f"fix: {fix}")

        for name in ("steps", "batch_size", "grad_accum", "max_nonfinite"):
            if getattr(self, name) < 1:
                fail(name, f"must be >= 1, got {getattr(self, name)}", "use a positive integer")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            fail("lr", f"need 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}",
                 "e.g. --lr 5e-4 --min-lr 1e-5")
        if not 0 <= self.resolved_warmup < self.steps:
            fail("warmup_steps", f"{self.resolved_warmup} warm-up steps do not fit in {self.steps} steps",
                 "use fewer warm-up steps than --steps (about 10%)")
        if self.schedule not in SCHEDULES:
            fail("schedule", f"unknown schedule {self.schedule!r}", f"use one of {SCHEDULES}")
        if self.clip_norm < 0 or self.weight_decay < 0 or self.save_every < 0 or self.log_every < 0:
            fail("clip_norm", "clip_norm, weight_decay, save_every and log_every must be >= 0", "use 0 to disable")
        if self.health_every < 0 or self.resolved_health_warmup < 0:
            fail("health_every", "health_every and health_warmup_steps must be >= 0", "use 0 to turn health off")
        if self.health_probe_size < 2 or self.health_patience < 1:
            fail("health_probe_size", f"need health_probe_size >= 2 and health_patience >= 1, got "
                 f"{self.health_probe_size} and {self.health_patience}", "e.g. 64 samples, patience 2")
        for name in ("health_max_anisotropy", "health_min_effective_rank"):
            if not 0 <= getattr(self, name) <= 1:
                fail(name, f"must be in [0, 1] (0 = off), got {getattr(self, name)}", "e.g. 0.7 / 0.02, or 0")


class TrainingAborted(RuntimeError):
    """Training stopped on purpose (non-finite losses, collapse, teacher mismatch); the message says the fix."""


# ---- signals ----------------------------------------------------------------------------------------
class StopFlag:
    """SIGINT/SIGTERM set a flag (the loop saves and exits after the current step); a second SIGINT aborts."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now, without waiting for the checkpoint
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def agreed_signal(run: Run, stop: StopFlag) -> str:
    """The name of the signal that stops the run, the same on every rank (one all-reduce, only when stopping):
    SIGTERM when any rank got one (a scheduler's), else SIGINT. A rank that got none learns it from the others,
    so every process reports the same summary and exit status."""
    number = float(signal.Signals[stop.signal_name]) if stop.signal_name else 0.0
    agreed = int(dist_utils.all_reduce_max(torch.tensor(number, device=run.device)))
    return signal.Signals(agreed).name


# ---- the run's state --------------------------------------------------------------------------------
VOLATILE_KEYS = ("steps", "save_every", "log_every", "quiet", "plots", "device", "compile", "num_workers",
                 "max_nonfinite", "health_every", "health_probe_size", "health_max_anisotropy",
                 "health_min_effective_rank", "health_warmup_steps", "health_patience")  # may change on --resume


@dataclass
class Health:
    """The health pass's fixed inputs (the same on every rank and on resume) and, on rank 0, its guard."""

    probe: dict  # the fixed probe batch, collated and on the device
    knn: LabelledProbe | None  # the labelled image subset of the online k-NN (None: no labels)
    guard: CollapseGuard | None  # rank 0 only: the anisotropy / effective-rank thresholds
    abort: str | None = None  # the guard's message once it fired (rank 0)


@dataclass
class Run:
    """Everything one pretraining run holds between its steps."""

    cfg: PretrainConfig
    method: nn.Module  # the PretrainMethod itself (checkpoints, step_hook)
    model: nn.Module  # what a micro-batch goes through: the method, wrapped by DDP when world > 1
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    batches: Iterator  # this rank's micro-batches, from the first update still to do
    sampler: ShardSampler | None  # None for an iterable of ready batches
    out: Path
    full_config: dict  # config.json
    rank: int
    world: int
    device: torch.device
    start_step: int = 0
    skipped_total: int = 0  # non-finite updates skipped so far
    in_a_row: int = 0  # ... of them in a row (reset by a finite update)
    log: MetricsLog | None = None  # rank 0 only
    trainable: list = field(default_factory=list)
    health: Health | None = None  # the health pass's probe data and guard (None = off)
    health_in_a_row: int = 0  # health passes past a threshold in a row, from the checkpoint
    seconds_this_launch: float = 0.0  # wall-clock of the updates taken since this launch (the console's ETA)

    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoint"

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    @property
    def main(self) -> bool:
        return self.rank == 0


# ---- the loop -----------------------------------------------------------------------------------------
def pretrain(method: nn.Module, data, cfg: PretrainConfig, out_dir: str | Path, *, resume: bool = False,
             collate_fn=None, run_config: dict | None = None, health_data: LabelledProbe | None = None) -> dict:
    """Pretrain `method` (a `PretrainMethod`) on `data` for `cfg.steps` updates, writing the run folder `out_dir`.

    data: a map-style dataset (items collated by `collate_fn`, default torch's) — exact resume and DDP
    sharding — or any iterable of ready batches (dicts of tensors; resume skips by replaying).
    run_config: extra configuration (method name, data, tokenizer...) saved in config.json and checkpoints.
    health_data: a labelled image subset for the online k-NN of the health pass (None: no k-NN).
    `method.step_hook(step, total_steps)` is called after each optimiser update with `step` = 0-based index of
    the update just taken. Returns the summary also written to out_dir/summary.json.
    """
    run = start_run(method, data, cfg, Path(out_dir), resume, collate_fn, run_config)
    run.health = start_health(run, data, collate_fn, health_data)
    bar = progress_bar(run)
    stopped_by, last, step_times = None, {}, []
    method.train()
    try:
        with StopFlag() as stop:
            for step in range(run.start_step, cfg.steps):
                lr = run.schedule.apply(run.optimizer, step)
                t0, c0 = time.perf_counter(), time.process_time()
                stats, stop_now = train_step(run, step, stop)
                hook_stats = step_or_skip(run, step, stats)
                step_times.append(time.perf_counter() - t0)
                cpu_time = time.process_time() - c0  # this process's CPU seconds: immune to other work on the machine
                health = health_pass(run, step)  # {} except on health steps
                last = log_step(run, step, lr, stats, {**hook_stats, **health}, step_times[-1], bar, cpu_time)
                stop_if_collapsed(run, step)
                stop_if_diverged(run, step)
                if stop_now:
                    stopped_by = agreed_signal(run, stop)
                    save(run, step + 1, "signal")
                    break
                maybe_save(run, step)
            else:
                if run.start_step < cfg.steps or not run.ckpt_dir.exists():
                    save(run, cfg.steps, "final")
    finally:
        bar.close()
        if run.log is not None:
            run.log.close()
    return finish(run, last, step_times, stopped_by)


# ---- the steps of one update -------------------------------------------------------------------------
def train_step(run: Run, step: int, stop: StopFlag) -> tuple[dict[str, float], bool]:
    """Forward and backward over the `grad_accum` micro-batches of this rank, each seeded from (seed, step,
    shard); the gradient clipped; the statistics averaged over micro-batches and ranks and moved to the host in
    one transfer (with the stop flag: any rank's signal stops every rank). -> (statistics, stop now?)."""
    cfg = run.cfg
    run.optimizer.zero_grad(set_to_none=True)
    autocast = (lambda: torch.autocast(run.device.type, dtype=torch.bfloat16)) if cfg.bf16 else nullcontext
    sums: dict[str, Tensor] = {}
    try:
        for micro in range(cfg.grad_accum):
            try:
                batch = to_device(next(run.batches), run.device)
            except StopIteration:
                raise ValueError("the data iterable ran out before --steps updates; fix: pass fewer --steps or a "
                                 "map-style dataset (which cycles epochs)") from None
            seed_all(shard_seed(cfg.seed, step, run.rank * cfg.grad_accum + micro))  # this shard's RNG
            sync = run.model.no_sync() if run.world > 1 and micro < cfg.grad_accum - 1 else nullcontext()
            with sync:
                with autocast():
                    loss, stats = run.model(batch)
                (loss / cfg.grad_accum).backward()
            for k, v in {**stats, "loss": loss.detach()}.items():  # float64 on the device: no host sync yet
                v = v.detach() if isinstance(v, Tensor) else v
                term = torch.as_tensor(v, dtype=torch.float64, device=run.device) / cfg.grad_accum
                sums[k] = sums[k] + term if k in sums else term
    except CollapseError as error:
        save(run, step, "collapse")
        raise TrainingAborted(f"{error} (checkpoint of update {step} saved in {run.ckpt_dir})") from None
    grad_norm = torch.nn.utils.clip_grad_norm_(run.trainable, cfg.clip_norm if cfg.clip_norm > 0 else math.inf)
    keys = sorted(sums)
    flag = torch.tensor(1.0 if stop.signal_name else 0.0, dtype=torch.float64, device=run.device)
    packed = torch.stack([sums[k] for k in keys] + [grad_norm.detach().to(torch.float64), flag])
    values = dist_utils.all_reduce_mean(packed).cpu().tolist()  # the one host transfer of the step
    host = dict(zip(keys, values[:-2], strict=True))
    host["grad_norm"] = values[-2]
    return host, values[-1] > 0


def step_or_skip(run: Run, step: int, stats: dict[str, float]) -> dict[str, float]:
    """The optimiser step and the method's step hook (EMA teacher) for a finite update; a non-finite loss or
    gradient skips the update instead (counted). -> the hook's values to log."""
    if not (math.isfinite(stats["loss"]) and math.isfinite(stats["grad_norm"])):
        run.optimizer.zero_grad(set_to_none=True)
        run.skipped_total, run.in_a_row = run.skipped_total + 1, run.in_a_row + 1
        return {}
    run.optimizer.step()
    try:
        hook_stats = run.method.step_hook(step, run.cfg.steps) or {}
    except CollapseError as error:
        save(run, step + 1, "collapse")
        raise TrainingAborted(f"{error} (checkpoint of update {step + 1} saved in {run.ckpt_dir})") from None
    run.in_a_row = 0
    return hook_stats


def log_step(run: Run, step: int, lr: float, stats: dict, hook_stats: dict, seconds: float, bar,
             cpu_seconds: float | None = None) -> dict:
    """One record in metrics.jsonl (rank 0), the progress bar, and every `log_every` updates a console line.
    `step_time` is the update's wall-clock, `step_cpu_time` the CPU time this process spent on it (all its
    threads: equal to the wall-clock of a one-thread run on an otherwise idle core)."""
    cfg = run.cfg
    record = {"step": step + 1, **{k: v for k, v in stats.items() if k != "grad_norm"}, "lr": lr,
              "grad_norm": stats["grad_norm"], "throughput": run.full_config["global_batch"] / seconds,
              "step_time": seconds, "step_cpu_time": cpu_seconds, "nonfinite_skipped": run.skipped_total,
              **{k: float(v) for k, v in hook_stats.items()}}
    if run.sampler is not None:
        record["epoch"] = run.sampler.position(step)["epoch"]
    if run.main:
        run.log.write(record)
        bar.update(1)
        bar.set_postfix(loss=f"{stats['loss']:.4g}", lr=f"{lr:.2e}")
        run.seconds_this_launch += seconds
        if not cfg.quiet and bar.disable and cfg.log_every and ((step + 1) % cfg.log_every == 0
                                                                or step == run.start_step):
            print(console_line(run, step, lr, record), flush=True)
    return record


def console_line(run: Run, step: int, lr: float, record: dict) -> str:
    """The line printed every `log_every` updates where no progress bar is shown (output to a file or a pipe):
    progress, speed and the time left at this launch's mean speed, then the loss and the target statistics."""
    done = step + 1 - run.start_step  # updates taken since this launch
    rate = done / max(run.seconds_this_launch, 1e-9)  # updates per second
    left = (run.cfg.steps - step - 1) / rate
    shown = ("tau", "target_std", "pred_std", "explained_variance")
    extras = " ".join(f"{k} {record[k]:.4g}" for k in shown if k in record)
    return (f"step {step + 1}/{run.cfg.steps} ({rate:.2f} updates/s, ETA {int(left) // 60}:{int(left) % 60:02d}) "
            f"loss {record['loss']:.4g} lr {lr:.3g} {record['throughput']:.1f} samples/s {extras}").rstrip()


def stop_if_diverged(run: Run, step: int) -> None:
    """Stop (with the last good weights saved) after `max_nonfinite` non-finite updates in a row."""
    if run.in_a_row >= run.cfg.max_nonfinite:
        save(run, step + 1, "nonfinite")
        raise TrainingAborted(
            f"the loss or gradient was non-finite (nan/inf) for {run.in_a_row} updates in a row (update {step + 1}; "
            f"{run.skipped_total} skipped in total); fix: lower --lr (2-4x), lengthen --warmup-steps, lower "
            f"--clip-norm, or turn off --bf16; the last good weights are in {run.ckpt_dir}")


# ---- representation health (diagnostics.py; docs/health.md) --------------------------------------------
def start_health(run: Run, data, collate_fn, knn: LabelledProbe | None) -> Health | None:
    """The fixed probe batch (`health_probe_size` seeded indices of a map-style data set, collated like the
    training batches, drawn without touching the training RNG) and rank 0's guard; None (with a notice) when
    health is off or the run's batches are not text / image / multi-crop dicts."""
    cfg = run.cfg
    if not cfg.health_every:
        return None
    if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        return health_off(run, "the data is an iterable, not a map-style data set the probe batch can index")
    seed = mix_seed(cfg.seed, 3)  # the probe's own stream: no training order or augmentation draws from it
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[: cfg.health_probe_size]
    items = SeededItems(data, seed)
    with preserved_rng():
        probe = (collate_fn or default_collate)([items[(0, i)] for i in sorted(order.tolist())])
    if not (isinstance(probe, dict) and {"input_ids", "images", "crops"} & set(probe)
            and isinstance(getattr(run.method, "backbone", None), nn.Module)):
        return health_off(run, "its batches have no 'input_ids', 'images' or 'crops' (or the method no backbone)")
    guard = None
    if run.main:
        guard = health_guard(cfg, run.full_config.get("method") or type(run.method).__name__,
                             text="input_ids" in probe)
        guard.steps_below = run.health_in_a_row
    return Health(probe=to_device(probe, run.device), knn=knn, guard=guard)


def health_guard(cfg: PretrainConfig, method_name: str, text: bool = True) -> CollapseGuard:
    """The guard of the health statistics: anisotropy at most `health_max_anisotropy` (text probes only: a
    random data2vec 2.0 ViT already measures 0.74), rank_fraction at least `health_min_effective_rank`, from
    update `resolved_health_warmup` on, `health_patience` passes in a row."""
    max_anisotropy = cfg.health_max_anisotropy if text else 0.0
    return CollapseGuard({"rank_fraction": cfg.health_min_effective_rank}, cfg.resolved_health_warmup,
                         cfg.health_patience, maximums={"anisotropy": max_anisotropy}, method=method_name,
                         advice="or, if this run is meant to look like that, raise the threshold "
                         "(--health-max-anisotropy / --health-min-effective-rank; 0 = off)")


def health_off(run: Run, why: str) -> None:
    if run.main and not run.cfg.quiet:
        print(f"pretrain: representation health off: {why}", flush=True)
    return None


def is_health_step(run: Run, step: int) -> bool:
    """After update 1, every `health_every` updates and after the last update (the same on every rank)."""
    done = step + 1
    return run.health is not None and (done == 1 or done % run.cfg.health_every == 0 or done == run.cfg.steps)


def health_pass(run: Run, step: int) -> dict[str, float]:
    """On health steps, rank 0: the student's final features on the probe batch -> health/* statistics
    (anisotropy, effective rank, rank fraction, pooled rank, feature std), the online k-NN accuracy when
    labelled images were given, the pass's duration; the guard sees them. In eval mode under no_grad with
    the global RNG states saved and restored, so the training run is unchanged bit for bit."""
    if not (is_health_step(run, step) and run.main):
        return {}
    t0 = time.perf_counter()
    backbone, health = run.method.backbone, run.health
    modes = [(module, module.training) for module in backbone.modules()]
    backbone.eval()
    try:
        with preserved_rng(), torch.no_grad():
            stats = health_statistics(*backbone_features(backbone, health.probe))
            if health.knn is not None:
                stats["knn_acc"] = online_knn(backbone, health.knn, run.cfg.batch_size, run.device)
    finally:
        for module, training in modes:
            module.train(training)
    try:
        health.guard.check(step + 1, stats)
    except CollapseError as error:
        health.abort = str(error)
    return {f"health/{k}": v for k, v in {**stats, "seconds": time.perf_counter() - t0}.items()}


def stop_if_collapsed(run: Run, step: int) -> None:
    """On health steps every rank learns whether rank 0's guard fired (one all-reduce), then all save and stop."""
    if not is_health_step(run, step):
        return
    fired = torch.tensor(1.0 if run.health.abort else 0.0, device=run.device)
    if float(dist_utils.all_reduce_max(fired)) > 0:
        save(run, step + 1, "collapse")
        raise TrainingAborted(f"{run.health.abort or 'rank 0 saw a collapse'} (checkpoint of update {step + 1} "
                              f"saved in {run.ckpt_dir})")


@contextmanager
def preserved_rng():
    """The python, numpy, torch (and CUDA) RNG states saved before and restored after the block."""
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def maybe_save(run: Run, step: int) -> None:
    """The periodic checkpoint (every `save_every` updates; the final one is written after the loop)."""
    every = run.cfg.save_every
    if every and (step + 1) % every == 0 and step + 1 < run.cfg.steps:
        save(run, step + 1, "periodic")


def save(run: Run, step_done: int, reason: str) -> None:
    """An atomic checkpoint after `step_done` updates (rank 0 writes; every rank checks the EMA teachers agree)."""
    rngs = dist_utils.all_gather_object(get_rng_state())
    sums = dist_utils.all_gather_object(dist_utils.checksum(run.method, trainable=False))
    if len(set(sums)) > 1:
        raise TrainingAborted(f"the frozen (EMA teacher) weights differ across ranks {sums}; fix: every rank must "
                              "build the model with the same --seed and call step_hook after every update")
    if run.main:
        extra = {"scheduler": run.schedule.state_dict(), "rng_per_rank": rngs, "reason": reason,
                 "data_position": run.sampler.position(step_done) if run.sampler else {"batches": step_done},
                 "counters": {"nonfinite_skipped": run.skipped_total, "nonfinite_in_a_row": run.in_a_row,
                              "health_in_a_row": run.health.guard.steps_below if run.health and run.health.guard
                              else run.health_in_a_row}}
        save_checkpoint(run.ckpt_dir, model=run.method, optimizer=run.optimizer, step=step_done,
                        config=run.full_config, extra=extra)
        if run.cfg.plots:
            write_plots(run.metrics_path, run.out / "plots")
    dist_utils.barrier()


# ---- set-up and the end of a run ----------------------------------------------------------------------
def start_run(method: nn.Module, data, cfg: PretrainConfig, out: Path, resume: bool, collate_fn,
              run_config: dict | None) -> Run:
    """Device, optimiser, schedule, config.json, then either the checkpoint's state (resume) or a fresh start,
    the data order from the first update still to do, and the DDP / torch.compile wrappers."""
    cfg.validate()
    rank, local_rank, world = dist_utils.init_distributed(str(resolve_device(cfg.device)))
    device = resolve_device(cfg.device, local_rank)
    method.to(device)
    optimizer = build_optimizer(method, cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps)
    schedule = LRSchedule.build(cfg.schedule, total_steps=cfg.steps, base_lr=cfg.lr, warmup_steps=cfg.resolved_warmup,
                                final_lr=cfg.min_lr, tri_stage_fracs=cfg.tri_stage_fracs)
    full_config = run_configuration(method, cfg, run_config, world)
    run = Run(cfg=cfg, method=method, model=method, optimizer=optimizer, schedule=schedule, batches=iter(()),
              sampler=None, out=out, full_config=full_config, rank=rank, world=world, device=device,
              trainable=[p for p in method.parameters() if p.requires_grad])
    if resume:
        resume_from_checkpoint(run)
    else:
        start_fresh(run)
    if run.main:
        atomic_write_text(out / "config.json", json.dumps(full_config, indent=2, sort_keys=True))
        run.log = MetricsLog(run.metrics_path, fresh=False)
    dist_utils.barrier()
    run.batches, run.sampler = data_order(data, run, collate_fn)
    if world > 1:
        run.model = nn.parallel.DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.find_unused_parameters)
    if cfg.compile:
        compile_encoders(method)
    return run


def compile_encoders(method: nn.Module) -> None:
    """`torch.compile` the method's encoders in place (the student `backbone`, the EMA `teacher`): they do
    nearly all the work, while the masks, targets and losses stay eager, so the masks come from the seeded
    eager RNG (compiled and eager runs draw the same masks) and Python-side mask code (BEiT blocks) is never
    traced. In place, so the state-dict keys (checkpoints) are those of an eager run."""
    for name in ("backbone", "teacher"):
        module = getattr(method, name, None)
        if isinstance(module, nn.Module):
            module.compile()


def run_configuration(method: nn.Module, cfg: PretrainConfig, run_config: dict | None, world: int) -> dict:
    """config.json: the caller's run configuration, the method's config, the loop's config, the global batch."""
    method_cfg = getattr(method, "cfg", None)
    full_config = {
        **(run_config or {}),
        "method_config": dataclasses.asdict(method_cfg) if dataclasses.is_dataclass(method_cfg) else None,
        "pretrain": dataclasses.asdict(cfg),
        "world_size": world,
        "global_batch": cfg.batch_size * cfg.grad_accum * world,
    }
    return json.loads(json.dumps(full_config, default=str))  # tuples -> lists, as in config.json


def resume_from_checkpoint(run: Run) -> None:
    """Weights, optimiser, counters and RNG states from the checkpoint (its configuration must match, apart from
    `VOLATILE_KEYS`); metrics written after it are dropped (they will be recomputed identically)."""
    expect = json.loads(json.dumps(run.full_config))
    for key in VOLATILE_KEYS:
        expect["pretrain"].pop(key, None)
    info = load_checkpoint(run.ckpt_dir, model=run.method, optimizer=run.optimizer, expect_config=expect,
                           map_location=run.device)
    run.start_step = info["step"]
    counters = info["extra"].get("counters", {})
    run.skipped_total = counters.get("nonfinite_skipped", 0)
    run.in_a_row = counters.get("nonfinite_in_a_row", 0)
    run.health_in_a_row = counters.get("health_in_a_row", 0)
    per_rank = info["extra"].get("rng_per_rank")
    set_rng_state(per_rank[run.rank] if per_rank and len(per_rank) == run.world else info["rng"])
    if run.main:
        MetricsLog.truncate(run.metrics_path, run.start_step)


def start_fresh(run: Run) -> None:
    """A new run: refuse to overwrite one that has a checkpoint, seed, and start an empty metrics.jsonl."""
    if run.ckpt_dir.exists() or run.ckpt_dir.with_name("checkpoint.old").exists():
        raise ValueError(f"{run.out} already holds a run with a checkpoint; fix: add --resume to continue it, "
                         "or choose a new --out folder")
    set_seed(run.cfg.seed)
    if run.main:
        run.out.mkdir(parents=True, exist_ok=True)
        run.metrics_path.write_text("", encoding="utf-8")


def data_order(data, run: Run, collate_fn) -> tuple[Iterator, ShardSampler | None]:
    """This rank's micro-batches from the first update still to do: a seeded, sharded order over a map-style
    dataset (exact resume), or an iterable of ready batches replayed past the updates already done."""
    cfg = run.cfg
    if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        skip = run.start_step * cfg.grad_accum * run.world
        return (b for i, b in enumerate(data) if i >= skip and i % run.world == run.rank), None
    sampler = ShardSampler(len(data), cfg.batch_size, cfg.grad_accum, run.world, run.rank, cfg.seed, run.start_step)
    if sampler.steps_per_epoch < 1:
        raise ValueError(f"the data set has {len(data)} samples, fewer than one global batch of "
                         f"{sampler.global_batch} (batch_size x grad_accum x processes); fix: lower --batch-size "
                         "or --grad-accum, or use more data")
    loader = DataLoader(SeededItems(data, cfg.seed), batch_sampler=sampler, collate_fn=collate_fn,
                        num_workers=cfg.num_workers, pin_memory=run.device.type == "cuda")
    return iter(loader), sampler


def progress_bar(run: Run):
    from tqdm.auto import tqdm

    show = run.main and not run.cfg.quiet
    bar = tqdm(total=run.cfg.steps, initial=run.start_step, disable=not (show and sys.stderr.isatty()),
               desc="pretrain", dynamic_ncols=True)
    if show:
        print(f"pretrain: {run.world} process(es) on {run.device}, global batch {run.full_config['global_batch']}, "
              f"steps {run.start_step}->{run.cfg.steps}, run folder {run.out}", flush=True)
    return bar


def finish(run: Run, last: dict, step_times: list[float], stopped_by: str | None) -> dict:
    """summary.json, and the closing console line (how to continue after a signal)."""
    if not last and run.main:  # resumed a finished run: nothing new, report the last logged update
        logged = read_metrics(run.metrics_path)
        last = logged[-1] if logged else {}
    steps_done = last.get("step", run.start_step)
    summary = {
        "steps_done": steps_done, "steps": run.cfg.steps, "final_loss": last.get("loss"), "world_size": run.world,
        "global_batch": run.full_config["global_batch"], "nonfinite_skipped": run.skipped_total,
        "stopped_by": stopped_by,
        "mean_step_time_s": float(np.mean(step_times[1:] or step_times)) if step_times else None,
        "teacher_checksums": dist_utils.all_gather_object(dist_utils.checksum(run.method, trainable=False)),
        "checkpoint": str(run.ckpt_dir), "metrics": str(run.metrics_path),
    }
    if run.main:
        summary_text = json.dumps({k: json_value(v) for k, v in summary.items()}, indent=2)
        atomic_write_text(run.out / "summary.json", summary_text)
        if stopped_by:  # printed even with --quiet: the user must learn how to continue
            print(f"pretrain: stopped by {stopped_by} after update {steps_done}; checkpoint saved in "
                  f"{run.ckpt_dir}. Continue with the same command and --resume.", flush=True)
        elif not run.cfg.quiet:
            loss_text = f"{summary['final_loss']:.4g}" if summary["final_loss"] is not None else "n/a"
            print(f"pretrain: done, {steps_done} updates, final loss {loss_text}; "
                  f"metrics {run.metrics_path}, plots {run.out / 'plots'}, checkpoint {run.ckpt_dir}", flush=True)
    return summary
