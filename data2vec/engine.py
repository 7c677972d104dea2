"""The one pretraining loop for every method (data2vec, BERT, DINO), and the optimiser pieces it shares.

What it implements
- `param_groups` / `build_optimizer`: AdamW (Loshchilov & Hutter 2019) without weight decay on 1-D
  parameters (biases, norms, layer-scale gammas), position tables and CLS/mask tokens (BERT, BEiT,
  data2vec-vision), optionally with BEiT's layer-wise lr decay `scale_i = decay ** (depth + 1 - i)`
  (BEiT arXiv 2106.08254 appendix; data2vec-vision fine-tuning uses 0.65).
- `pretrain`: warm-up + cosine (or tri-stage) learning rate, gradient accumulation, clipping, bf16 autocast,
  `torch.compile` and DDP behind flags, the method's `step_hook` (EMA) right after the optimiser step
  (data2vec paper arXiv 2202.03555, section 3.2: the teacher follows the updated student), per-step JSON-lines
  metrics, plots, atomic checkpoints, exact resumption and clean stops on SIGINT/SIGTERM.

Determinism (what makes `--resume` and the 1-vs-N-process comparison exact)
- The data order is a pure function of (seed, epoch): step k of an epoch reads the k-th slice of a
  seeded permutation, so the data position is a function of the step and resuming skips without replay.
- One optimiser step reads `world * grad_accum` shards of `batch_size` samples; shard s = rank * grad_accum
  + micro. Before a shard's forward the RNGs are seeded from (seed, step, s), and each sample's augmentation
  from (seed, epoch, index). So random masks, dropout and augmentations do not depend on the history of the
  run, and 1 process with grad_accum = 2 computes the same shards as 2 processes with grad_accum = 1.

Differences from the original: fairseq/BEiT keep one global RNG stream per worker (resuming replays or
re-seeds it approximately); here every shard is seeded explicitly. A non-finite loss skips the update (like
fairseq's overflow handling) and training stops after `max_nonfinite` in a row instead of continuing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import re
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import distributed as dist_utils
from .checkpoint import (atomic_write_text, get_rng_state, load_checkpoint, save_checkpoint, set_rng_state,
                         set_seed)
from .schedules import SCHEDULES, LRSchedule, tri_stage, warmup_cosine

__all__ = [
    "PretrainConfig", "TrainingAborted", "pretrain", "param_groups", "build_optimizer", "warmup_cosine", "tri_stage",
    "LRSchedule", "save_checkpoint", "load_checkpoint", "set_seed", "get_rng_state", "set_rng_state", "write_plots",
]

# Parameters that never get weight decay besides every tensor with <= 1 dimension (BEiT's `no_weight_decay`
# set: pos_embed, cls_token, mask_token, relative position tables; plus our position table names).
NO_DECAY_NAMES = ("cls_token", "mask_token", "pos_embed", "positions", "rel_pos", "relative_position", "gamma")


# ---- optimiser ------------------------------------------------------------------------------------
def _layer_id(name: str, depth: int) -> int:
    """BEiT layer ids: embeddings/tokens 0, block i -> i + 1, everything else (heads, shared bias) depth + 1."""
    block = re.search(r"(?:^|\.)blocks\.(\d+)\.", name)
    if block:
        return int(block.group(1)) + 1
    per_block_bias = re.search(r"(?:^|\.)rel_pos\.(\d+)\.", name)  # one relative bias per block
    if per_block_bias:
        return int(per_block_bias.group(1)) + 1
    if re.search(r"(?:^|\.)(embed|cls_token|mask_token|pos_embed)(?:\.|$)", name):
        return 0
    return depth + 1


def param_groups(model: nn.Module, weight_decay: float, *, layer_decay: float | None = None,
                 base_lr: float | None = None, no_decay_names: tuple[str, ...] = NO_DECAY_NAMES) -> list[dict]:
    """AdamW groups over the trainable parameters: {"params", "weight_decay", "lr_scale", "group_name"[, "lr"]}.

    No decay on 1-D tensors and on names containing any of `no_decay_names`. With `layer_decay`, the lr of
    block i is scaled by layer_decay ** (depth + 1 - (i + 1)); embeddings get the smallest scale, heads 1.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    block_ids = {int(m.group(1)) for n, _ in named for m in [re.search(r"(?:^|\.)blocks\.(\d+)\.", n)] if m}
    depth = max(block_ids) + 1 if block_ids else 0
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in named:
        decay = not (p.ndim <= 1 or any(key in name for key in no_decay_names))
        layer = _layer_id(name, depth) if layer_decay is not None else depth + 1
        scale = layer_decay ** (depth + 1 - layer) if layer_decay is not None else 1.0
        key = (layer, decay)
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale,
                           "group_name": f"layer{layer}_{'decay' if decay else 'no_decay'}"}
            if base_lr is not None:
                groups[key]["lr"] = base_lr * scale
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.98), eps: float = 1e-6,
                    layer_decay: float | None = None) -> torch.optim.AdamW:
    """AdamW over the parameters with requires_grad=True (teachers are excluded), grouped by `param_groups`."""
    groups = param_groups(model, weight_decay, layer_decay=layer_decay, base_lr=lr)
    if not groups:
        raise ValueError("the model has no trainable parameters (all requires_grad=False); fix: unfreeze the student")
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


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

    @property
    def resolved_warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else max(1, self.steps // 10)

    def validate(self) -> None:
        def fail(field_name, problem, fix):
            raise ValueError(f"PretrainConfig.{field_name}: {problem}; fix: {fix}")

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


class TrainingAborted(RuntimeError):
    """Training stopped on purpose (non-finite losses, collapse, teacher mismatch); the message says the fix."""


# ---- deterministic data order ---------------------------------------------------------------------
def _mix(*values: int) -> int:
    """A 63-bit seed from integers (sha256; independent streams for (seed, step, shard) tuples)."""
    digest = hashlib.sha256(",".join(str(int(v)) for v in values).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _SeededItems(Dataset):
    """dataset[(epoch, i)] = dataset[i] with the RNGs seeded from (seed, epoch, i): augmentation per sample."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        _seed_all(_mix(self.seed, 1, epoch, index))
        return self.dataset[index]


class _ShardSampler:
    """Yields this rank's micro-batches of (epoch, index) from `start_step` on, forever.

    Step k uses global batch G = batch_size * grad_accum * world from epoch e = k // steps_per_epoch:
    perm_e[j * G : (j + 1) * G] with j = k % steps_per_epoch; shard s = rank * grad_accum + micro gets the
    s-th slice of `batch_size`. perm_e is a seeded permutation; leftover samples of an epoch are dropped.
    """

    def __init__(self, n: int, batch_size: int, grad_accum: int, world: int, rank: int, seed: int, start_step: int):
        self.n, self.b, self.accum, self.world, self.rank = n, batch_size, grad_accum, world, rank
        self.seed, self.start_step = seed, start_step
        self.global_batch = batch_size * grad_accum * world
        self.steps_per_epoch = n // self.global_batch

    def position(self, step: int) -> dict:
        return {"epoch": step // self.steps_per_epoch, "index_in_epoch": (step % self.steps_per_epoch) * self.global_batch}

    def __iter__(self):
        step, perm, perm_epoch = self.start_step, None, -1
        while True:
            epoch, j = divmod(step, self.steps_per_epoch)
            if epoch != perm_epoch:
                g = torch.Generator().manual_seed(_mix(self.seed, 0, epoch))
                perm, perm_epoch = torch.randperm(self.n, generator=g).tolist(), epoch
            base = j * self.global_batch
            for micro in range(self.accum):
                s = (self.rank * self.accum + micro) * self.b + base
                yield [(epoch, i) for i in perm[s : s + self.b]]
            step += 1


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


# ---- metrics and plots ------------------------------------------------------------------------------
def _json_value(v):
    return v if not isinstance(v, float) or math.isfinite(v) else None  # NaN/inf -> null (valid JSON)


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl file (a torn last line from a crash is ignored)."""
    out = []
    path = Path(path)
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


PLOT_GROUPS = {  # file name -> metric keys drawn in it (only those present are drawn)
    "loss": ("loss",),
    "lr": ("lr",),
    "tau": ("tau", "teacher_temp"),
    "std": ("target_std", "pred_std", "teacher_std", "student_std"),
    "grad_norm": ("grad_norm",),
    "throughput": ("throughput",),
}


def write_plots(metrics_path: str | Path, plots_dir: str | Path) -> list[Path]:
    """Draw the curves of metrics.jsonl into plots_dir/<group>.png (matplotlib, no display needed)."""
    from matplotlib.figure import Figure  # Figure + savefig uses the Agg canvas: no GUI backend involved

    records = read_metrics(metrics_path)
    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, keys in PLOT_GROUPS.items():
        present = [k for k in keys if any(r.get(k) is not None for r in records)]
        if not present:
            continue
        fig = Figure(figsize=(6, 3.5), tight_layout=True)
        ax = fig.add_subplot()
        for k in present:
            pts = [(r["step"], r[k]) for r in records if r.get(k) is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k)
        ax.set_xlabel("update")
        ax.set_title(name)
        if name == "loss" and all(p > 0 for r in records if r.get("loss") is not None for p in [r["loss"]]):
            ax.set_yscale("log")
        ax.legend()
        path = plots_dir / f"{name}.png"
        tmp = plots_dir / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=100)
        tmp.replace(path)
        written.append(path)
    return written


# ---- signals ----------------------------------------------------------------------------------------
class _StopFlag:
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


def _collapse_error_types() -> tuple[type, ...]:
    try:
        from .model import CollapseError  # data2vec's collapse guard (optional: methods without one exist)
    except ImportError:
        return ()
    return (CollapseError,)


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available; fix: use --device cpu")
        if name == "cuda":
            name = f"cuda:{local_rank}"
    return torch.device(name)


# ---- the loop -----------------------------------------------------------------------------------------
VOLATILE_KEYS = ("steps", "save_every", "log_every", "quiet", "plots", "device", "compile", "num_workers",
                 "max_nonfinite")  # may change between a run and its --resume


def pretrain(method: nn.Module, data, cfg: PretrainConfig, out_dir: str | Path, *, resume: bool = False,
             collate_fn=None, run_config: dict | None = None) -> dict:
    """Pretrain `method` on `data` for `cfg.steps` updates, writing the run folder `out_dir`.

    data: a map-style dataset (items collated by `collate_fn`, default torch's) — exact resume and DDP
    sharding — or any iterable of ready batches (dicts of tensors; resume skips by replaying).
    run_config: extra configuration (method name, data, tokenizer...) saved in config.json and checkpoints.
    `method.step_hook(step, total_steps)` is called after each optimiser update with `step` = 0-based index of
    the update just taken. Returns the summary also written to out_dir/summary.json.
    """
    cfg.validate()
    out = Path(out_dir)
    rank, local_rank, world = dist_utils.init_distributed(cfg.device if cfg.device != "auto" else
                                                          ("cuda" if torch.cuda.is_available() else "cpu"))
    main = rank == 0
    device = _resolve_device(cfg.device, local_rank)
    ckpt_dir, metrics_path = out / "checkpoint", out / "metrics.jsonl"
    method.to(device)
    optimizer = build_optimizer(method, cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps)
    schedule = LRSchedule.build(cfg.schedule, total_steps=cfg.steps, base_lr=cfg.lr, warmup_steps=cfg.resolved_warmup,
                                final_lr=cfg.min_lr, tri_stage_fracs=cfg.tri_stage_fracs)
    method_cfg = getattr(method, "cfg", None)
    full_config = {
        **(run_config or {}),
        "method_config": dataclasses.asdict(method_cfg) if dataclasses.is_dataclass(method_cfg) else None,
        "pretrain": dataclasses.asdict(cfg),
        "world_size": world,
        "global_batch": cfg.batch_size * cfg.grad_accum * world,
    }
    full_config = json.loads(json.dumps(full_config, default=str))  # tuples -> lists, as in config.json
    expect = json.loads(json.dumps(full_config))
    for key in VOLATILE_KEYS:
        expect["pretrain"].pop(key, None)

    # ---- start or resume ------------------------------------------------------------------------
    start_step, skipped_total, in_a_row = 0, 0, 0
    if resume:
        info = load_checkpoint(ckpt_dir, model=method, optimizer=optimizer, expect_config=expect, map_location=device)
        start_step = info["step"]
        counters = info["extra"].get("counters", {})
        skipped_total, in_a_row = counters.get("nonfinite_skipped", 0), counters.get("nonfinite_in_a_row", 0)
        per_rank = info["extra"].get("rng_per_rank")
        set_rng_state(per_rank[rank] if per_rank and len(per_rank) == world else info["rng"])
        if main:  # drop metrics written after the checkpoint (they will be recomputed identically)
            kept = [r for r in read_metrics(metrics_path) if r.get("step", 0) <= start_step]
            atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
    else:
        if ckpt_dir.exists() or ckpt_dir.with_name("checkpoint.old").exists():
            raise ValueError(f"{out} already holds a run with a checkpoint; fix: add --resume to continue it, "
                             "or choose a new --out folder")
        set_seed(cfg.seed)
        if main:
            out.mkdir(parents=True, exist_ok=True)
            metrics_path.write_text("", encoding="utf-8")
    if main:
        atomic_write_text(out / "config.json", json.dumps(full_config, indent=2, sort_keys=True))
    dist_utils.barrier()

    # ---- data -------------------------------------------------------------------------------------
    map_style = hasattr(data, "__getitem__") and hasattr(data, "__len__")
    sampler = None
    if map_style:
        sampler = _ShardSampler(len(data), cfg.batch_size, cfg.grad_accum, world, rank, cfg.seed, start_step)
        if sampler.steps_per_epoch < 1:
            raise ValueError(f"the data set has {len(data)} samples, fewer than one global batch of "
                             f"{sampler.global_batch} (batch_size x grad_accum x processes); fix: lower --batch-size "
                             "or --grad-accum, or use more data")
        loader = DataLoader(_SeededItems(data, cfg.seed), batch_sampler=sampler, collate_fn=collate_fn,
                            num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
        batches = iter(loader)
    else:
        def _replay():
            for i, batch in enumerate(data):
                if i >= start_step * cfg.grad_accum * world and i % world == rank:
                    yield batch
        batches = _replay()

    # ---- model wrappers ---------------------------------------------------------------------------
    model = method
    if world > 1:
        model = nn.parallel.DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.find_unused_parameters)
    forward = torch.compile(model) if cfg.compile else model
    trainable = [p for p in method.parameters() if p.requires_grad]
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if cfg.bf16 else nullcontext
    collapse_types = _collapse_error_types()

    def checkpoint(step_done: int, reason: str) -> None:
        rngs = dist_utils.all_gather_object(get_rng_state())
        sums = dist_utils.all_gather_object(dist_utils.checksum(method, trainable=False))
        if len(set(sums)) > 1:
            raise TrainingAborted(f"the frozen (EMA teacher) weights differ across ranks {sums}; fix: every rank must "
                                  "build the model with the same --seed and call step_hook after every update")
        if main:
            extra = {"scheduler": schedule.state_dict(), "rng_per_rank": rngs, "reason": reason,
                     "data_position": sampler.position(step_done) if sampler else {"batches": step_done},
                     "counters": {"nonfinite_skipped": skipped_total, "nonfinite_in_a_row": in_a_row}}
            save_checkpoint(ckpt_dir, model=method, optimizer=optimizer, step=step_done, config=full_config, extra=extra)
            if cfg.plots:
                write_plots(metrics_path, out / "plots")
        dist_utils.barrier()

    from tqdm.auto import tqdm

    show = main and not cfg.quiet
    bar = tqdm(total=cfg.steps, initial=start_step, disable=not (show and sys.stderr.isatty()), desc="pretrain",
               dynamic_ncols=True)
    if show:
        print(f"pretrain: {world} process(es) on {device}, global batch {full_config['global_batch']}, "
              f"steps {start_step}->{cfg.steps}, run folder {out}", flush=True)
    metrics_file = open(metrics_path, "a", encoding="utf-8") if main else None
    stop_reason, last, step_times = None, {}, []
    method.train()
    try:
        with _StopFlag() as stop:
            for step in range(start_step, cfg.steps):
                lr = schedule.apply(optimizer, step)
                t0 = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                sums: dict[str, float] = {}
                try:
                    for micro in range(cfg.grad_accum):
                        try:
                            batch = _to_device(next(batches), device)
                        except StopIteration:
                            raise ValueError("the data iterable ran out before --steps updates; fix: pass fewer "
                                             "--steps or a map-style dataset (which cycles epochs)") from None
                        _seed_all(_mix(cfg.seed, 2, step, rank * cfg.grad_accum + micro))  # this shard's RNG
                        sync = model.no_sync() if world > 1 and micro < cfg.grad_accum - 1 else nullcontext()
                        with sync:
                            with autocast():
                                loss, stats = forward(batch)
                            (loss / cfg.grad_accum).backward()
                        stats = {**stats, "loss": float(loss.detach())}
                        for k, v in stats.items():
                            sums[k] = sums.get(k, 0.0) + float(v) / cfg.grad_accum
                except collapse_types as error:
                    checkpoint(step, "collapse")
                    raise TrainingAborted(f"{error} (checkpoint of update {step} saved in {ckpt_dir})") from None
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.clip_norm if cfg.clip_norm > 0 else math.inf)
                # one all-reduce carries the stats (mean over ranks) and the stop flag (any rank)
                keys = sorted(sums)
                packed = torch.tensor([sums[k] for k in keys] + [1.0 if stop.signal_name else 0.0], dtype=torch.float64)
                packed = dist_utils.all_reduce_mean(packed.to(device)).cpu()
                stats = dict(zip(keys, packed[:-1].tolist()))
                stop_now = packed[-1].item() > 0
                finite = math.isfinite(stats["loss"]) and math.isfinite(float(grad_norm))
                hook_stats = {}
                if finite:
                    optimizer.step()
                    try:
                        hook_stats = method.step_hook(step, cfg.steps) or {}
                    except collapse_types as error:
                        checkpoint(step + 1, "collapse")
                        raise TrainingAborted(f"{error} (checkpoint of update {step + 1} saved in {ckpt_dir})") from None
                    in_a_row = 0
                else:
                    optimizer.zero_grad(set_to_none=True)
                    skipped_total, in_a_row = skipped_total + 1, in_a_row + 1
                dt = time.perf_counter() - t0
                step_times.append(dt)
                last = {"step": step + 1, **stats, "lr": lr, "grad_norm": float(grad_norm),
                        "throughput": full_config["global_batch"] / dt, "step_time": dt,
                        "nonfinite_skipped": skipped_total, **{k: float(v) for k, v in hook_stats.items()}}
                if sampler is not None:
                    last["epoch"] = sampler.position(step)["epoch"]
                if main:
                    metrics_file.write(json.dumps({k: _json_value(v) for k, v in last.items()}) + "\n")
                    metrics_file.flush()
                    bar.update(1)
                    bar.set_postfix(loss=f"{stats['loss']:.4g}", lr=f"{lr:.2e}")
                    if show and bar.disable and cfg.log_every and ((step + 1) % cfg.log_every == 0 or step == start_step):
                        extras = " ".join(f"{k} {last[k]:.4g}" for k in ("tau", "target_std", "pred_std") if k in last)
                        print(f"step {step + 1}/{cfg.steps} loss {stats['loss']:.4g} lr {lr:.3g} "
                              f"{last['throughput']:.1f} samples/s {extras}".rstrip(), flush=True)
                if in_a_row >= cfg.max_nonfinite:
                    checkpoint(step + 1, "nonfinite")
                    raise TrainingAborted(
                        f"the loss or gradient was non-finite (nan/inf) for {in_a_row} updates in a row (update "
                        f"{step + 1}; {skipped_total} skipped in total); fix: lower --lr (2-4x), lengthen --warmup-steps, "
                        "lower --clip-norm, or turn off --bf16; the last good weights are in " + str(ckpt_dir))
                if stop_now:
                    stop_reason = stop.signal_name or "signal on another rank"
                    checkpoint(step + 1, "signal")
                    break
                if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
                    checkpoint(step + 1, "periodic")
            else:
                if start_step < cfg.steps or not ckpt_dir.exists():
                    checkpoint(cfg.steps, "final")
    finally:
        bar.close()
        if metrics_file is not None:
            metrics_file.close()
    if not last and main:  # resumed a finished run: nothing new, report the last logged update
        logged = read_metrics(metrics_path)
        last = logged[-1] if logged else {}
    steps_done = last.get("step", start_step)
    summary = {
        "steps_done": steps_done, "steps": cfg.steps, "final_loss": last.get("loss"), "world_size": world,
        "global_batch": full_config["global_batch"], "nonfinite_skipped": skipped_total, "stopped_by": stop_reason,
        "mean_step_time_s": float(np.mean(step_times[1:] or step_times)) if step_times else None,
        "teacher_checksums": dist_utils.all_gather_object(dist_utils.checksum(method, trainable=False)),
        "checkpoint": str(ckpt_dir), "metrics": str(metrics_path),
    }
    if main:
        atomic_write_text(out / "summary.json", json.dumps({k: _json_value(v) for k, v in summary.items()}, indent=2))
        if stop_reason:  # printed even with --quiet: the user must learn how to continue
            print(f"pretrain: stopped by {stop_reason} after update {steps_done}; checkpoint saved in {ckpt_dir}. "
                  "Resume with the same command plus --resume.", flush=True)
        elif show:
            loss_text = f"{summary['final_loss']:.4g}" if summary["final_loss"] is not None else "n/a"
            print(f"pretrain: done, {steps_done} updates, final loss {loss_text}; "
                  f"metrics {metrics_path}, plots {out / 'plots'}, checkpoint {ckpt_dir}", flush=True)
    return summary
