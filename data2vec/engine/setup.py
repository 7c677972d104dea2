"""The start of a pretraining run: device, optimiser, schedule, config.json, then either the checkpoint's
state (`--resume`) or a fresh start, the data order from the first update still to do, and the DDP /
torch.compile wrappers.

Differences from the original: fairseq/BEiT keep one global RNG stream per worker (resuming replays or
re-seeds it approximately); here every shard is seeded explicitly (`sampling.py`), so a resumed run draws
what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from torch import nn
from torch.utils.data import DataLoader

from .. import distributed as dist_utils
from ..checkpoint import atomic_write_text, load_checkpoint, set_rng_state, set_seed
from ..devices import resolve_device
from ..metrics import MetricsLog
from ..optim import build_optimizer
from ..sampling import SeededItems, ShardSampler
from ..schedules import LRSchedule
from ..transformer import compile_blocks
from .config import VOLATILE_KEYS, PretrainConfig
from .state import Run


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
    """`torch.compile` the Transformer blocks of the method's encoders (the student `backbone`, the EMA
    `teacher`), in place (`transformer.compile_blocks`): they do nearly all the work, while the masks, targets
    and losses stay eager, so the masks come from the seeded eager RNG (compiled and eager runs draw the same
    masks) and Python-side mask code (BEiT blocks) is never traced."""
    for name in ("backbone", "teacher"):
        module = getattr(method, name, None)
        if isinstance(module, nn.Module):
            compile_blocks(module)


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
