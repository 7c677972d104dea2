"""The pretraining loop, in named steps.

`pretrain(method, data, cfg, out_dir)` reads: set up the run (`start_run`, setup.py) -> per update: learning
rate from the schedule -> `train_step` (forward and backward over the micro-batches, the gradient clipped, the
statistics reduced over ranks and moved to the host once) -> `step_or_skip` (the optimiser step and the
method's `step_hook`, or a skipped non-finite update) -> `health_pass` (health.py) -> `log_step`
(metrics.jsonl, progress) -> `stop_if_collapsed` (the health guard) -> `stop_if_diverged` -> `maybe_save`
(periodic, on SIGINT/SIGTERM, at the end) -> `finish` (summary.json).
The method's `step_hook` (the EMA teacher) runs right after the optimiser step (data2vec paper
arXiv 2202.03555, section 3.2: the teacher follows the updated student).

Differences from the original: a non-finite loss skips the update (like fairseq's overflow handling) and
training stops after `max_nonfinite` in a row instead of continuing.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .. import distributed as dist_utils
from ..checkpoint import atomic_write_text, set_seed
from ..devices import to_device
from ..diagnostics import CollapseError, LabelledProbe
from ..metrics import json_value, read_metrics
from ..sampling import shard_seed
from .config import PretrainConfig, TrainingAborted
from .health import health_pass, start_health, stop_if_collapsed
from .setup import progress_bar, start_run
from .state import Run, StopFlag, agreed_signal, save


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
            set_seed(shard_seed(cfg.seed, step, run.rank * cfg.grad_accum + micro))  # this shard's RNG
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


# ---- checkpoints and the end of a run ---------------------------------------------------------------------
def maybe_save(run: Run, step: int) -> None:
    """The periodic checkpoint (every `save_every` updates; the final one is written after the loop)."""
    every = run.cfg.save_every
    if every and (step + 1) % every == 0 and step + 1 < run.cfg.steps:
        save(run, step + 1, "periodic")


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
