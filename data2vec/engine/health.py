"""The representation-health pass of the pretraining loop (diagnostics.py, docs/health.md): every
`health_every` updates the student's features on a fixed probe batch -> health/* statistics in metrics.jsonl,
and the guard that stops a run whose representation collapses.

Differences from the original: data2vec and fairseq log no representation statistics during pretraining; the
pass runs in eval mode with the RNG states saved and restored, so a run with it is bit for bit the run without.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import default_collate

from .. import distributed as dist_utils
from ..checkpoint import preserved_rng
from ..devices import to_device
from ..diagnostics import CollapseError, CollapseGuard, LabelledProbe, backbone_features, health_statistics, online_knn
from ..sampling import SeededItems, mix_seed
from .config import PretrainConfig, TrainingAborted
from .state import Run, save


@dataclass
class Health:
    """The health pass's fixed inputs (the same on every rank and on resume) and, on rank 0, its guard."""

    probe: dict  # the fixed probe batch, collated and on the device
    knn: LabelledProbe | None  # the labelled image subset of the online k-NN (None: no labels)
    guard: CollapseGuard | None  # rank 0 only: the anisotropy / effective-rank thresholds
    abort: str | None = None  # the guard's message once it fired (rank 0)


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
    if not (isinstance(probe, dict) and {"input_ids", "images", "crops", "waveform"} & set(probe)
            and isinstance(getattr(run.method, "backbone", None), nn.Module)):
        return health_off(run, "its batches have no 'input_ids', 'images', 'crops' or 'waveform' (or the method no "
                          "backbone)")
    guard = None
    if run.main:
        guard = health_guard(cfg, run.full_config.get("method") or type(run.method).__name__,
                             text="input_ids" in probe)
        guard.steps_below = run.health_in_a_row
    return Health(probe=to_device(probe, run.device), knn=knn, guard=guard)


def health_guard(cfg: PretrainConfig, method_name: str, text: bool = True) -> CollapseGuard:
    """The guard of the health statistics: anisotropy at most `health_max_anisotropy` (text probes only: a
    randomly initialised ViT can sit high by architecture alone), rank_fraction at least
    `health_min_effective_rank`, from update `resolved_health_warmup` on, `health_patience` passes in a row."""
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
        # eager even under --compile: a diagnostic pass at another batch size would otherwise compile the blocks
        # once more, with a dynamic batch dimension that the teacher's calls could then pick up
        with preserved_rng(), torch.no_grad(), torch.compiler.set_stance("force_eager"):
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
