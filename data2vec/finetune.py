"""One explicit fine-tuning loop for a `TaskModel` (backbone + head): GLUE, SQuAD, image classification.

What it implements
- The loss of each task type (`heads.task_loss`: cross-entropy with label smoothing, MSE, span CE), or the one
  given as `loss_fn(outputs, batch)` (speech recognition: `tasks.audio.ctc.CTCObjective`).
- AdamW through `optim.build_optimizer` (no weight decay on biases/norms), optionally with layer-wise
  learning-rate decay (BEiT, Bao et al. 2021, appendix; data2vec paper section 4 "fine-tuning" for vision):
  a parameter of layer l in 0..L+1 (0 = embeddings, 1..L = blocks, L+1 = head) gets lr * decay^(L + 1 - l).
- Learning rate: linear warm-up, then linear decay (RoBERTa's GLUE recipe, fairseq `polynomial_decay`
  with power 1) or cosine decay (BEiT / data2vec-vision), both pure functions of the step (schedules.py).
- Evaluation after every `eval_every` epochs (and the last) with a metric function; the best epoch by the task's
  main metric is kept as a checkpoint (`<out>/best/`); `<out>/eval.jsonl` gets one line per evaluation and
  `<out>/metrics.json` the final summary (best and last metrics, config, timings).
- Resume at epoch granularity: after every evaluated epoch `<out>/checkpoint/` holds the weights, the optimiser,
  the step, the history, the best epoch so far and every RNG state (the global ones and the data order's
  generator), so that `finetune(..., resume=True)` after an interruption finishes with the same weights and
  history as a run that was never stopped (at most `eval_every` epochs are lost). The configuration must match
  the checkpoint's (device, log_every and eval_batch_size may change). Resuming a finished run trains nothing
  and writes the same summary again.
- Honest model selection: with a `test_set`, the evaluation split is a validation split carved from the
  training data; it picks the epoch, and the test split is scored once with the selected weights and once
  with the last ones (`summary["test"]`; one pass when the selected epoch is the last). Without one, "best" is
  the best epoch on the very split it is measured on: an optimistic number (most of all for small, noisy
  evaluation sets), labelled as such.

`finetune(...)` reads: `prepare_finetune` (seed, loaders, optimiser) -> `resume_or_clear` -> per epoch: `train_epoch`
-> on evaluated epochs `evaluate` -> `select` (the best epoch, `<out>/best/`) -> `save_resume_point` -> after
the last epoch `score_test` (with a test set) -> `summarise` (metrics.json). The recipes (RoBERTa GLUE, BEiT
ImageNet) are the defaults of `FinetuneConfig` (finetune_config.py).

Differences from the originals
- No mixup/cutmix, random erasing or model EMA for images; no gradient accumulation.
- The training loader drops its last partial batch (as MAE/BEiT/DeiT's image fine-tuning does; fairseq's GLUE
  recipe keeps it), for every task: an epoch is floor(N / batch) updates, one update for a set below a batch.
- Evaluation every epoch on the given split only (the originals evaluate on dev and report the best dev
  epoch too; test sets of GLUE have no labels).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .checkpoint import load_checkpoint, save_checkpoint, set_rng_state, set_seed
from .devices import to_device
from .finetune_config import FinetuneConfig
from .heads import model_inputs, task_loss
from .optim import build_optimizer
from .predict import predict
from .schedules import set_lr, warmup_cosine, warmup_linear
from .transformer import compile_blocks


def lr_at(cfg: FinetuneConfig, step: int, total_steps: int, warmup_steps: int) -> float:
    """The configured schedule's learning rate at `step`."""
    if cfg.schedule == "linear":
        return warmup_linear(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr)
    return warmup_cosine(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr)


# ---- the run's state ------------------------------------------------------------------------------------

CHECKPOINT = "checkpoint"  # <out>/checkpoint: the state after the last evaluated epoch (kept, as pretraining keeps its)
# FinetuneConfig keys that may differ on resume
RESUMABLE_CHANGES = ("device", "log_every", "eval_batch_size", "compile")


@dataclass
class FinetuneRun:
    """Everything one fine-tuning run holds between its epochs."""

    cfg: FinetuneConfig
    model: nn.Module
    device: torch.device
    optimizer: torch.optim.Optimizer
    data_rng: torch.Generator  # the training loader's shuffle; saved, so a resumed run draws the same order
    train_loader: DataLoader
    eval_loader: DataLoader
    test_loader: DataLoader | None
    out: Path
    run_identity: dict  # what a checkpoint records and --resume must find unchanged
    total_steps: int
    warmup_steps: int
    metric_fn: Callable[[object, object], dict]
    loss_fn: Callable[[object, dict], Tensor] | None  # None: heads.task_loss of the task type
    run_info: dict | None
    quiet: bool
    split_names: tuple[str, str]  # what the console lines call the evaluation and the test split
    step: int = 0  # optimiser updates taken
    done_epochs: int = 0  # epochs finished before this launch (from the checkpoint)
    elapsed_before: float = 0.0  # wall-clock seconds of the launches before this one
    cpu_before: float = 0.0  # ... and their CPU seconds
    train_s: dict = field(default_factory=lambda: {"wall": 0.0, "cpu": 0.0})  # inside train_epoch, every launch
    history: list[dict] = field(default_factory=list)  # one row per evaluated epoch (eval.jsonl)
    best: dict | None = None  # the selected epoch's row
    best_state: dict[str, Tensor] | None = None  # the selected epoch's weights (CPU copy), for the test pass
    t0: float = 0.0  # wall clock at the run's start, over every launch
    c0: float = 0.0  # CPU clock at the run's start, over every launch

    @property
    def ckpt_dir(self) -> Path:
        return self.out / CHECKPOINT

    @property
    def eval_log(self) -> Path:
        return self.out / "eval.jsonl"


def finetune_optimizer(model: nn.Module, cfg: FinetuneConfig):
    """AdamW with the configuration's decay, betas, eps and layer-wise lr decay."""
    return build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps, layer_decay=cfg.layer_decay)


def _better(new: float, best: float | None, greater: bool) -> bool:
    if best is None or (isinstance(best, float) and math.isnan(best)):
        return True
    return new > best if greater else new < best


# ---- the loop --------------------------------------------------------------------------------------------


def finetune(
    model: nn.Module,
    train_set: Dataset,
    eval_set: Dataset,
    cfg: FinetuneConfig,
    out_dir: str | Path,
    metric_fn: Callable[[object, object], dict],
    collate_fn: Callable | None = None,
    eval_collate_fn: Callable | None = None,
    run_info: dict | None = None,
    quiet: bool = False,
    test_set: Dataset | None = None,
    resume: bool = False,
    split_names: tuple[str, str] = ("evaluation", "test"),
    loss_fn: Callable[[object, dict], Tensor] | None = None,
) -> dict:
    """Fine-tune `model` (a TaskModel) on `train_set`, evaluate on `eval_set` every `cfg.eval_every` epochs.

    metric_fn(outputs, labels) -> {name: value}: gets what `predict` returns and must contain
    `cfg.main_metric`. Writes `<out_dir>/eval.jsonl`, `<out_dir>/metrics.json` and (if cfg.save_best)
    `<out_dir>/best/`; returns the metrics.json content. With `test_set`, `eval_set` is a validation split that
    selects the epoch, and the summary's "test" holds the test metrics of the selected and of the last weights.
    resume: continue from `<out_dir>/checkpoint/` when there is one (the same data and configuration; a
    difference raises ValueError naming it); without one, or with resume=False, the run starts from epoch 1.
    split_names: what the console lines call `eval_set` and `test_set` (e.g. "validation", "GLUE dev").
    loss_fn(outputs, batch) -> scalar loss: replaces `heads.task_loss` (required for task_type "ctc").
    """
    if cfg.task_type == "ctc" and loss_fn is None:
        raise ValueError("finetune: task_type 'ctc' needs loss_fn; fix: pass tasks.audio.ctc.CTCObjective()")
    run = prepare_finetune(model, train_set, eval_set, test_set, cfg, Path(out_dir), collate_fn, eval_collate_fn,
                  metric_fn=metric_fn, loss_fn=loss_fn, run_info=run_info, quiet=quiet, split_names=split_names)
    resume_or_clear(run, resume)
    run.eval_log.write_text("".join(json.dumps(row) + "\n" for row in run.history))
    run.t0, run.c0 = time.time() - run.elapsed_before, time.process_time() - run.cpu_before
    for epoch in range(run.done_epochs + 1, cfg.epochs + 1):
        wall, cpu = time.time(), time.process_time()
        train_loss = train_epoch(run, epoch)
        run.train_s["wall"] += time.time() - wall  # the updates alone (what an equal-budget floor is given)
        run.train_s["cpu"] += time.process_time() - cpu
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            row, metrics = evaluate(run, epoch, train_loss)
            select(run, row, metrics, epoch)
            save_resume_point(run, epoch)
    test = None if test_set is None else score_test(run, len(test_set))
    return summarise(run, test, len(train_set), len(eval_set))


def prepare_finetune(model: nn.Module, train_set: Dataset, eval_set: Dataset, test_set: Dataset | None,
            cfg: FinetuneConfig, out: Path, collate_fn: Callable | None, eval_collate_fn: Callable | None,
            **run_fields) -> FinetuneRun:
    """Check the data, seed, move the model to its device, build the loaders and the optimiser."""
    cfg.validate()
    out.mkdir(parents=True, exist_ok=True)
    if len(train_set) == 0:
        raise ValueError("finetune: the training set is empty; fix: check --data and --max-train-examples")
    if len(eval_set) == 0:
        raise ValueError("finetune: the evaluation set is empty; fix: check --data and --max-eval-examples")
    set_seed(cfg.seed)
    device = torch.device(cfg.device)
    model.to(device)
    g = torch.Generator().manual_seed(cfg.seed)
    # The last partial batch is dropped (MAE, BEiT and DeiT fine-tune so): a remainder of one or two examples
    # would move Adam as far as a full batch does, on the noise of one example (docs/usage.md).
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate_fn, generator=g,
                              drop_last=len(train_set) > cfg.batch_size)  # a set smaller than a batch: one batch
    eval_loader = DataLoader(eval_set, batch_size=cfg.eval_batch_size or 2 * cfg.batch_size, shuffle=False,
                             collate_fn=eval_collate_fn or collate_fn)
    total_steps = cfg.epochs * len(train_loader)
    optimizer = finetune_optimizer(model, cfg)
    if cfg.compile:  # the blocks, in place: the state-dict keys (checkpoints, best/) stay those of the eager model
        compile_blocks(model)
    test_loader = None if test_set is None else DataLoader(
        test_set, batch_size=cfg.eval_batch_size or 2 * cfg.batch_size, shuffle=False,
        collate_fn=eval_collate_fn or collate_fn)
    run_identity = {"finetune": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUMABLE_CHANGES},
                    "train_examples": len(train_set), "eval_examples": len(eval_set),
                    "test_examples": None if test_set is None else len(test_set)}
    return FinetuneRun(cfg=cfg, model=model, device=device, optimizer=optimizer, data_rng=g,
                       train_loader=train_loader, eval_loader=eval_loader, test_loader=test_loader, out=out,
                       run_identity=run_identity, total_steps=total_steps,
                       warmup_steps=int(round(cfg.warmup_ratio * total_steps)), **run_fields)


def resume_or_clear(run: FinetuneRun, resume: bool) -> None:
    """With `resume` and a checkpoint: weights, optimiser, step, history, best epoch, clocks and RNG states from
    it. Without `resume`, an older run's checkpoint is removed (a later resume must not find it)."""
    has_checkpoint = run.ckpt_dir.is_dir() or run.ckpt_dir.with_name(f"{CHECKPOINT}.old").is_dir()
    if resume and has_checkpoint:
        info = load_checkpoint(run.ckpt_dir, model=run.model, optimizer=run.optimizer,
                               expect_config=run.run_identity, map_location=run.device)
        state = info["extra"]
        run.step, run.done_epochs = info["step"], state["epoch"]
        run.elapsed_before, run.cpu_before = state["elapsed_s"], state["cpu_time_s"]  # the stopped launches' time
        run.history, run.best, run.best_state = state["history"], state["best"], state.get("best_state")
        run.train_s = state.get("train_s", {"wall": float("nan"), "cpu": float("nan")})  # nan: saved before it was kept
        run.data_rng.set_state(state["data_order_rng"])  # the next epoch's shuffle: the one the stopped run drew
        set_rng_state(info["rng"])  # dropout and any other global randomness
        if not run.quiet:
            print(f"resuming {run.out} after epoch {run.done_epochs}/{run.cfg.epochs} (step {run.step})", flush=True)
    elif has_checkpoint:
        shutil.rmtree(run.ckpt_dir, ignore_errors=True)
        shutil.rmtree(run.ckpt_dir.with_name(f"{CHECKPOINT}.old"), ignore_errors=True)


def train_epoch(run: FinetuneRun, epoch: int) -> float:
    """One pass over the training loader: lr from the schedule, forward, loss, backward, (clip), step.
    -> the epoch's mean training loss."""
    cfg, model = run.cfg, run.model
    model.train()
    loss_sum, n_batches = 0.0, 0
    for batch in run.train_loader:
        lr = lr_at(cfg, run.step, run.total_steps, run.warmup_steps)
        set_lr(run.optimizer, lr)  # layer-wise decay: each group carries its lr_scale
        batch = to_device(batch, run.device)
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):  # losses run in fp32 in it
            outputs = model(**model_inputs(batch))
            loss = run.loss_fn(outputs, batch) if run.loss_fn is not None else \
                task_loss(cfg.task_type, outputs, batch, cfg.label_smoothing)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite fine-tuning loss {loss.item()} at step {run.step} (epoch {epoch}); lower --lr "
                f"(now {cfg.lr}) or enable gradient clipping"
            )
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        run.optimizer.step()
        run.step += 1
        loss_sum += loss.item()
        n_batches += 1
        if not run.quiet and cfg.log_every and run.step % cfg.log_every == 0:
            print(f"  step {run.step}/{run.total_steps}  loss {loss.item():.4f}  lr {lr:.3g}", flush=True)
    return loss_sum / max(1, n_batches)


def scored(run: FinetuneRun, loader: DataLoader) -> dict[str, float]:
    """The metric function over the model's predictions on `loader`."""
    return {k: float(v) for k, v in run.metric_fn(*predict(run.model, loader, run.cfg.task_type, run.device,
                                                                          run.cfg.bf16)).items()}


def evaluate(run: FinetuneRun, epoch: int, train_loss: float) -> tuple[dict, dict[str, float]]:
    """The evaluation split's metrics (and, with `test_every_epoch`, the test split's, never used to select),
    appended to the history and eval.jsonl. -> (the epoch's row, the evaluation metrics)."""
    cfg = run.cfg
    metrics = scored(run, run.eval_loader)
    if cfg.main_metric not in metrics:
        raise ValueError(f"the metric function returned {sorted(metrics)}, without main_metric "
                         f"{cfg.main_metric!r}; set FinetuneConfig.main_metric to one of them")
    row = {"epoch": epoch, "step": run.step, "train_loss": train_loss, "elapsed_s": round(time.time() - run.t0, 2),
           **metrics}
    if run.test_loader is not None and cfg.test_every_epoch:  # reported beside, never used to select
        row.update({f"test_{k}": v for k, v in scored(run, run.test_loader).items()})
    run.history.append(row)
    with open(run.eval_log, "a") as fh:
        fh.write(json.dumps(row) + "\n")
    return row, metrics


def select(run: FinetuneRun, row: dict, metrics: dict[str, float], epoch: int) -> None:
    """Keep the epoch if its main metric is the best so far (its weights in `<out>/best/`, and in memory for
    the test pass), and print the epoch's line."""
    cfg = run.cfg
    best = run.best
    is_best = best is None or _better(metrics[cfg.main_metric], best[cfg.main_metric], cfg.greater_is_better)
    if is_best:
        run.best = dict(row)
        if run.test_loader is not None:
            run.best_state = {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()}
        if cfg.save_best:
            save_checkpoint(run.out / "best", model=run.model, optimizer=None, step=run.step,
                            config={"finetune": dataclasses.asdict(cfg), **(run.run_info or {})},
                            extra={"epoch": epoch, "metrics": metrics})
    if not run.quiet:
        shown = "  ".join(f"{k} {v:.2f}" for k, v in metrics.items())
        print(f"epoch {epoch}/{cfg.epochs}  train loss {row['train_loss']:.4f}  {run.split_names[0]}: {shown}"
              f"{'  (best)' if is_best else ''}", flush=True)


def save_resume_point(run: FinetuneRun, epoch: int) -> None:
    """Everything the next epoch needs to continue as if the run had never stopped, in `<out>/checkpoint/`."""
    extra = {"epoch": epoch, "elapsed_s": time.time() - run.t0, "cpu_time_s": time.process_time() - run.c0,
             "history": run.history, "best": run.best, "data_order_rng": run.data_rng.get_state(),
             "train_s": run.train_s,
             **({"best_state": run.best_state} if run.best_state is not None else {})}
    save_checkpoint(run.ckpt_dir, model=run.model, optimizer=run.optimizer, step=run.step, config=run.run_identity,
                    extra=extra)


def score_test(run: FinetuneRun, examples: int) -> dict:
    """The test split scored with the last weights and with the selected ones (the model keeps the selected),
    and, when it was scored every epoch, the optimistic best epoch on the test split itself."""
    cfg, best = run.cfg, run.best
    last = scored(run, run.test_loader)
    if best["epoch"] == run.history[-1]["epoch"]:
        selected = last  # the selected weights are the last ones: one pass over the test split, not two
    else:
        run.model.load_state_dict(run.best_state)
        selected = scored(run, run.test_loader)
    test = {"selected": {"epoch": best["epoch"], **selected}, "last": {"epoch": run.history[-1]["epoch"], **last},
            "selection": "the epoch with the best validation score (eval_set = validation split)",
            "examples": examples}
    on_test = [r for r in run.history if f"test_{cfg.main_metric}" in r]
    if on_test:  # the optimistic number: the epoch that scores best on the test set itself
        top = max(on_test, key=lambda r: r[f"test_{cfg.main_metric}"] * (1 if cfg.greater_is_better else -1))
        test["best_epoch_on_test"] = {"epoch": top["epoch"], **{k.removeprefix("test_"): v for k, v in top.items()
                                                                if k.startswith("test_")}}
    if not run.quiet:
        print(f"{run.split_names[1]} ({examples} examples): {cfg.main_metric} "
              f"{selected[cfg.main_metric]:.2f} at the selected epoch {best['epoch']}, "
              f"{last[cfg.main_metric]:.2f} at the last", flush=True)
    return test


def summarise(run: FinetuneRun, test: dict | None, train_examples: int, eval_examples: int) -> dict:
    """metrics.json: the best and the last epoch, the test scores, the history, the configuration, timings."""
    summary = {
        "main_metric": run.cfg.main_metric,
        "best": run.best,
        "best_is": "selected on a validation split" if test is not None else
                   "the best epoch on the split it is measured on (optimistic)",
        "test": test,
        "final": run.history[-1],
        "history": run.history,
        "config": dataclasses.asdict(run.cfg),
        "train_examples": train_examples,
        "eval_examples": eval_examples,
        "steps": run.step,
        "wall_time_s": round(time.time() - run.t0, 2),
        "cpu_time_s": round(time.process_time() - run.c0, 2),  # this process's CPU time (all threads), every launch
        "train_wall_time_s": round(run.train_s["wall"], 2),  # in the updates alone: no evaluation, no checkpoint
        "train_cpu_time_s": round(run.train_s["cpu"], 2),
        **(run.run_info or {}),
    }
    (run.out / "metrics.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


__all__ = ["FinetuneConfig", "FinetuneRun", "finetune", "finetune_optimizer", "lr_at", "predict"]
