"""One explicit fine-tuning loop for a `TaskModel` (backbone + head): GLUE, SQuAD, image classification.

What it implements
- Losses by task type:
    "classification": cross-entropy with optional label smoothing eps,
        L = -sum_c q_c log softmax(z)_c,  q = (1 - eps) onehot(y) + eps / C   (Szegedy et al. 2016, section 7)
    "regression" (STS-B): mean squared error, L = mean_i (z_i - y_i)^2 (RoBERTa / fairseq sentence_prediction)
    "span" (SQuAD): L = (CE(start_logits, s) + CE(end_logits, e)) / 2 over the tokens (BERT section 4.2);
        padded positions are excluded from the softmax.
- AdamW through `engine.build_optimizer` (no weight decay on biases/norms), optionally with layer-wise
  learning-rate decay (BEiT, Bao et al. 2021, appendix; data2vec paper section 4 "fine-tuning" for vision):
  a parameter of layer l in 0..L+1 (0 = embeddings, 1..L = blocks, L+1 = head) gets lr * decay^(L + 1 - l).
- Learning rate: linear warm-up, then linear decay (RoBERTa's GLUE recipe, fairseq `polynomial_decay`
  with power 1) or cosine decay (BEiT / data2vec-vision), both pure functions of the step.
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
  with the last ones (`summary["test"]`). Without one, "best" is the best epoch on the very split it is
  measured on: an optimistic number (most of all for small, noisy evaluation sets), labelled as such.

Recipes (the defaults of `FinetuneConfig` are the text recipe; `vision_defaults()` the image one)
- RoBERTa / data2vec-text on GLUE (fairseq `examples/roberta/README.glue.md`; data2vec paper section 5.2
  fine-tunes "as RoBERTa"): Adam(0.9, 0.98), eps 1e-6, weight decay 0.1, lr 1e-5 or 2e-5, batch 16 or 32,
  10 epochs, warm-up 6% of the updates then linear decay, no layer decay.
- BEiT / data2vec-vision ViT-B on ImageNet (BEiT appendix; data2vec paper section 5.1): AdamW(0.9, 0.999),
  weight decay 0.05, lr 4e-3 at batch 1024 (scale linearly with the batch: lr = 4e-3 * batch / 1024),
  layer decay 0.65, cosine decay to 1e-6, label smoothing 0.1, 100 epochs with 20 warm-up epochs,
  mixup/cutmix (not implemented here).

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .config import config_error
from .devices import to_device

TASK_TYPES = ("classification", "regression", "span")
SCHEDULES = ("linear", "cosine")


@dataclass
class FinetuneConfig:
    """Hyper-parameters of one fine-tuning run (defaults: RoBERTa's GLUE recipe, see the module docstring)."""

    task_type: str = "classification"  # "classification" (CE), "regression" (MSE, STS-B) or "span" (SQuAD)
    epochs: int = 10  # RoBERTa GLUE: 10; BEiT ImageNet ViT-B: 100; SQuAD (BERT): 2-3
    batch_size: int = 32  # RoBERTa GLUE: 16 or 32
    lr: float = 2e-5  # peak lr; RoBERTa GLUE: 1e-5 or 2e-5; from scratch / tiny models: 1e-4 .. 1e-3
    min_lr: float = 0.0  # lr at the end of the decay (RoBERTa: 0; BEiT: 1e-6)
    weight_decay: float = 0.1  # RoBERTa GLUE: 0.1; BEiT fine-tuning: 0.05
    betas: tuple[float, float] = (0.9, 0.98)  # RoBERTa: (0.9, 0.98); BEiT/ViT: (0.9, 0.999)
    eps: float = 1e-6  # Adam epsilon (RoBERTa 1e-6; BEiT 1e-8)
    warmup_ratio: float = 0.06  # fraction of all updates spent warming up (RoBERTa GLUE: 6%; BEiT: 20/100 epochs)
    schedule: str = "linear"  # decay after warm-up: "linear" (RoBERTa) or "cosine" (BEiT/data2vec-vision)
    layer_decay: float | None = None  # layer-wise lr decay; None = off (text); 0.65 for data2vec-vision ViT-B
    label_smoothing: float = 0.0  # classification only; 0.1 for images (BEiT/data2vec-vision), 0 for GLUE
    clip_grad: float | None = None  # max gradient norm; None = off (RoBERTa GLUE uses none; BEiT 3.0 optional)
    main_metric: str = "score"  # key of the metric dict that picks the best epoch ("score" GLUE, "f1" SQuAD)
    greater_is_better: bool = True  # False for losses/errors
    seed: int = 1  # RoBERTa's fairseq default seed
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", ...
    eval_batch_size: int | None = None  # None = 2 x batch_size (no gradients, fits twice as many)
    log_every: int = 50  # print a training line every this many updates; 0 = only per epoch
    save_best: bool = True  # write the best epoch's weights to <out>/best/
    eval_every: int = 1  # epochs between evaluations (the last epoch is always evaluated); raise it for many epochs
    # with a test_set: score it too after every evaluated epoch (history "test_<metric>"), so that the optimistic
    # best-epoch-on-test number can be reported beside the selected one, labelled; it never selects anything
    test_every_epoch: bool = False

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        self.validate()

    def validate(self) -> None:
        def fail(name: str, problem: str, fix: str) -> None:
            raise config_error("FinetuneConfig", name, problem, fix)

        if self.task_type not in TASK_TYPES:
            fail("task_type", f"unknown task type {self.task_type!r}", f"use one of {TASK_TYPES}")
        if self.schedule not in SCHEDULES:
            fail("schedule", f"unknown schedule {self.schedule!r}", f"use one of {SCHEDULES}")
        if self.epochs < 1:
            fail("epochs", f"must be >= 1, got {self.epochs}", "train for at least one epoch")
        if self.batch_size < 1:
            fail("batch_size", f"must be >= 1, got {self.batch_size}", "use e.g. 32 (text) or 64 (images)")
        if not self.lr > 0:
            fail("lr", f"must be > 0, got {self.lr}", "use 2e-5 for pretrained text models, 1e-3 for tiny ones")
        if self.min_lr < 0 or self.min_lr > self.lr:
            fail("min_lr", f"must lie in [0, lr={self.lr}], got {self.min_lr}", "use 0 or e.g. 1e-6")
        if not 0 <= self.warmup_ratio < 1:
            fail("warmup_ratio", f"must lie in [0, 1), got {self.warmup_ratio}", "use 0.06 (RoBERTa) or 0.1")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            fail("layer_decay", f"must lie in (0, 1], got {self.layer_decay}", "use 0.65 (ViT-B) or 0.75, or None")
        if not 0 <= self.label_smoothing < 1:
            fail("label_smoothing", f"must lie in [0, 1), got {self.label_smoothing}", "use 0.1 for images or 0")
        if self.clip_grad is not None and self.clip_grad <= 0:
            fail("clip_grad", f"must be > 0 or None, got {self.clip_grad}", "use None or e.g. 1.0")
        if self.eval_every < 1:
            fail("eval_every", f"must be >= 1, got {self.eval_every}", "evaluate every epoch (1) or every few")
        if self.weight_decay < 0:
            fail("weight_decay", f"must be >= 0, got {self.weight_decay}", "use 0.1 (text) or 0.05 (images)")

    @classmethod
    def vision_defaults(cls, **overrides) -> FinetuneConfig:
        """BEiT / data2vec-vision recipe, reduced scale: AdamW(0.9, 0.999), wd 0.05, layer decay 0.65,
        cosine to 1e-6, label smoothing 0.1, warm-up 20% (20 of 100 epochs); lr for batch 64 at
        4e-3 * 64 / 1024 = 2.5e-4."""
        values = dict(task_type="classification", epochs=10, batch_size=64, lr=2.5e-4, min_lr=1e-6,
                      weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8, warmup_ratio=0.2, schedule="cosine",
                      layer_decay=0.65, label_smoothing=0.1, main_metric="accuracy")
        values.update(overrides)
        return cls(**values)


# ---- schedules (pure functions of the step) ------------------------------------------------------------


def warmup_linear(step: int, total_steps: int, warmup_steps: int, base_lr: float, final_lr: float = 0.0) -> float:
    """Linear warm-up from 0 to base_lr over warmup_steps, then linear decay to final_lr at total_steps.

    lr(t) = base_lr * (t + 1) / warmup                                   for t < warmup
    lr(t) = final_lr + (base_lr - final_lr) * (T - t) / (T - warmup)     after (clamped at final_lr)
    (fairseq `polynomial_decay` with power 1, RoBERTa's GLUE schedule.)
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    frac = min(1.0, (step - warmup_steps) / span)
    return final_lr + (base_lr - final_lr) * (1.0 - frac)


def lr_at(cfg: FinetuneConfig, step: int, total_steps: int, warmup_steps: int) -> float:
    """The configured schedule's learning rate at `step`."""
    if cfg.schedule == "linear":
        return warmup_linear(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr)
    from .schedules import warmup_cosine

    return warmup_cosine(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr)


# ---- losses --------------------------------------------------------------------------------------------


def task_loss(task_type: str, outputs, batch: Mapping[str, Tensor], label_smoothing: float = 0.0) -> Tensor:
    """The loss of one batch (see the module docstring for the three formulas)."""
    if task_type == "classification":
        return F.cross_entropy(outputs, batch["labels"], label_smoothing=label_smoothing)  # outputs (B, C)
    if task_type == "regression":
        pred = outputs.reshape(-1)  # (B, 1) -> (B,)
        return F.mse_loss(pred, batch["labels"].to(pred.dtype))
    if task_type == "span":
        start, end = outputs  # each (B, T)
        pad = batch.get("padding_mask")
        if pad is not None:  # padded tokens never win the softmax
            start = start.masked_fill(pad, torch.finfo(start.dtype).min)
            end = end.masked_fill(pad, torch.finfo(end.dtype).min)
        return 0.5 * (F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"]))
    raise ValueError(f"unknown task type {task_type!r}; use one of {TASK_TYPES}")


MODEL_INPUTS = ("input_ids", "padding_mask", "token_type_ids", "images")


def model_inputs(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The keys of a batch that the TaskModel consumes (the rest are targets and bookkeeping)."""
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS and v is not None}


# ---- evaluation ----------------------------------------------------------------------------------------


@torch.no_grad()
def predict(model: nn.Module, loader: Sequence | DataLoader, task_type: str, device="cpu"):
    """Run the model over `loader` in eval mode.

    Returns (outputs, labels):
      classification: logits (N, C) float array, labels (N,)
      regression:     predictions (N,), labels (N,)
      span:           a list of (start_logits (T_i,), end_logits (T_i,)) per feature, trimmed to its real
                      length; labels None.
    """
    was_training = model.training
    model.eval()
    outs: list = []
    labels: list = []
    try:
        for batch in loader:
            batch = to_device(batch, device)
            out = model(**model_inputs(batch))
            if task_type == "span":
                start, end = out  # (B, T) each
                if "padding_mask" in batch:
                    lengths = (~batch["padding_mask"]).sum(1).tolist()  # real tokens per example
                else:
                    lengths = [start.shape[1]] * len(start)
                for i, n in enumerate(lengths):
                    outs.append((start[i, :n].float().cpu().numpy(), end[i, :n].float().cpu().numpy()))
            else:
                outs.append(out.float().cpu())
                if "labels" in batch:
                    labels.append(batch["labels"].cpu())
    finally:
        model.train(was_training)
    if task_type == "span":
        return outs, None
    logits = torch.cat(outs).numpy()
    if task_type == "regression":
        logits = logits.reshape(-1)
    return logits, (torch.cat(labels).numpy() if labels else None)


# ---- the loop ------------------------------------------------------------------------------------------

CHECKPOINT = "checkpoint"  # <out>/checkpoint: the state after the last evaluated epoch (kept, as pretraining keeps its)
RESUMABLE_CHANGES = ("device", "log_every", "eval_batch_size")  # FinetuneConfig keys that may differ on resume


def _build_optimizer(model: nn.Module, cfg: FinetuneConfig):
    from .optim import build_optimizer

    return build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps, layer_decay=cfg.layer_decay)


def _better(new: float, best: float | None, greater: bool) -> bool:
    if best is None or (isinstance(best, float) and math.isnan(best)):
        return True
    return new > best if greater else new < best


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
) -> dict:
    """Fine-tune `model` (a TaskModel) on `train_set`, evaluate on `eval_set` every `cfg.eval_every` epochs.

    metric_fn(outputs, labels) -> {name: value}: gets what `predict` returns and must contain
    `cfg.main_metric`. Writes `<out_dir>/eval.jsonl`, `<out_dir>/metrics.json` and (if cfg.save_best)
    `<out_dir>/best/`; returns the metrics.json content. With `test_set`, `eval_set` is a validation split that
    selects the epoch, and the summary's "test" holds the test metrics of the selected and of the last weights.
    resume: continue from `<out_dir>/checkpoint/` when there is one (the same data and configuration; a
    difference raises ValueError naming it); without one, or with resume=False, the run starts from epoch 1.
    split_names: what the console lines call `eval_set` and `test_set` (e.g. "validation", "GLUE dev").
    """
    cfg.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(train_set) == 0:
        raise ValueError("finetune: the training set is empty; fix: check --data and --max-train-examples")
    if len(eval_set) == 0:
        raise ValueError("finetune: the evaluation set is empty; fix: check --data and --max-eval-examples")
    from .checkpoint import load_checkpoint, save_checkpoint, set_rng_state, set_seed

    set_seed(cfg.seed)
    device = torch.device(cfg.device)
    model.to(device)
    g = torch.Generator().manual_seed(cfg.seed)
    # The last partial batch is dropped (MAE, BEiT and DeiT fine-tune so): a remainder of one or two examples would
    # move Adam as far as a full batch does, on the noise of one example. Measured on 129 labelled digits at batch
    # 64 (remainder 1): a random-init ViT stayed at chance for 300 updates with it, and learned without it.
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate_fn, generator=g,
                              drop_last=len(train_set) > cfg.batch_size)  # a set smaller than a batch: one batch
    eval_loader = DataLoader(eval_set, batch_size=cfg.eval_batch_size or 2 * cfg.batch_size, shuffle=False,
                             collate_fn=eval_collate_fn or collate_fn)
    steps_per_epoch = len(train_loader)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = int(round(cfg.warmup_ratio * total_steps))
    optimizer = _build_optimizer(model, cfg)

    test_loader = None if test_set is None else DataLoader(
        test_set, batch_size=cfg.eval_batch_size or 2 * cfg.batch_size, shuffle=False,
        collate_fn=eval_collate_fn or collate_fn)
    history: list[dict] = []
    best: dict | None = None
    best_state: dict[str, Tensor] | None = None  # the selected epoch's weights (CPU copy), for the test pass
    step, done_epochs, elapsed_before, cpu_before = 0, 0, 0.0, 0.0
    ckpt_dir = out_dir / CHECKPOINT
    run_identity = {"finetune": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUMABLE_CHANGES},
                    "train_examples": len(train_set), "eval_examples": len(eval_set),
                    "test_examples": None if test_set is None else len(test_set)}
    has_checkpoint = ckpt_dir.is_dir() or ckpt_dir.with_name(f"{CHECKPOINT}.old").is_dir()
    if resume and has_checkpoint:
        info = load_checkpoint(ckpt_dir, model=model, optimizer=optimizer, expect_config=run_identity,
                               map_location=device)
        state = info["extra"]
        step, done_epochs = info["step"], state["epoch"]
        elapsed_before, cpu_before = state["elapsed_s"], state["cpu_time_s"]  # the stopped segments' time
        history, best, best_state = state["history"], state["best"], state.get("best_state")
        g.set_state(state["data_order_rng"])  # the next epoch's shuffle is the one the stopped run would have drawn
        set_rng_state(info["rng"])  # dropout and any other global randomness
        if not quiet:
            print(f"resuming {out_dir} after epoch {done_epochs}/{cfg.epochs} (step {step})", flush=True)
    elif has_checkpoint:  # a fresh start must not leave an older run's state for a later resume
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        shutil.rmtree(ckpt_dir.with_name(f"{CHECKPOINT}.old"), ignore_errors=True)
    eval_log = out_dir / "eval.jsonl"
    eval_log.write_text("".join(json.dumps(row) + "\n" for row in history))
    t0, c0 = time.time() - elapsed_before, time.process_time() - cpu_before  # clocks over every segment of the run
    for epoch in range(done_epochs + 1, cfg.epochs + 1):
        model.train()
        loss_sum, n_batches = 0.0, 0
        for batch in train_loader:
            lr = lr_at(cfg, step, total_steps, warmup_steps)
            for group in optimizer.param_groups:  # layer-wise decay: each group carries its lr_scale
                group["lr"] = lr * group.get("lr_scale", 1.0)
            batch = to_device(batch, device)
            outputs = model(**model_inputs(batch))
            loss = task_loss(cfg.task_type, outputs, batch, cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite fine-tuning loss {loss.item()} at step {step} (epoch {epoch}); lower --lr "
                    f"(now {cfg.lr}) or enable gradient clipping"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            optimizer.step()
            step += 1
            loss_sum += loss.item()
            n_batches += 1
            if not quiet and cfg.log_every and step % cfg.log_every == 0:
                print(f"  step {step}/{total_steps}  loss {loss.item():.4f}  lr {lr:.3g}", flush=True)
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            outputs, labels = predict(model, eval_loader, cfg.task_type, device)
            metrics = {k: float(v) for k, v in metric_fn(outputs, labels).items()}
            if cfg.main_metric not in metrics:
                raise ValueError(f"the metric function returned {sorted(metrics)}, without main_metric "
                                 f"{cfg.main_metric!r}; set FinetuneConfig.main_metric to one of them")
            row = {"epoch": epoch, "step": step, "train_loss": loss_sum / max(1, n_batches),
                   "elapsed_s": round(time.time() - t0, 2), **metrics}
            if test_loader is not None and cfg.test_every_epoch:  # reported beside, never used to select
                row.update({f"test_{k}": float(v)
                            for k, v in metric_fn(*predict(model, test_loader, cfg.task_type, device)).items()})
            history.append(row)
            with open(eval_log, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            is_best = best is None or _better(metrics[cfg.main_metric], best[cfg.main_metric], cfg.greater_is_better)
            if is_best:
                best = dict(row)
                if test_set is not None:
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                if cfg.save_best:
                    save_checkpoint(out_dir / "best", model=model, optimizer=None, step=step,
                                    config={"finetune": dataclasses.asdict(cfg), **(run_info or {})},
                                    extra={"epoch": epoch, "metrics": metrics})
            if not quiet:
                shown = "  ".join(f"{k} {v:.2f}" for k, v in metrics.items())
                print(f"epoch {epoch}/{cfg.epochs}  train loss {row['train_loss']:.4f}  {split_names[0]}: {shown}"
                      f"{'  (best)' if is_best else ''}", flush=True)
            # the resume point: everything the next epoch needs to continue as if the run had never stopped
            save_checkpoint(ckpt_dir, model=model, optimizer=optimizer, step=step, config=run_identity,
                            extra={"epoch": epoch, "elapsed_s": time.time() - t0,
                                   "cpu_time_s": time.process_time() - c0, "history": history, "best": best,
                                   "data_order_rng": g.get_state(),
                                   **({"best_state": best_state} if best_state is not None else {})})

    test = None
    if test_set is not None:
        last = {k: float(v) for k, v in metric_fn(*predict(model, test_loader, cfg.task_type, device)).items()}
        model.load_state_dict(best_state)
        selected = {k: float(v) for k, v in metric_fn(*predict(model, test_loader, cfg.task_type, device)).items()}
        test = {"selected": {"epoch": best["epoch"], **selected}, "last": {"epoch": history[-1]["epoch"], **last},
                "selection": "the epoch with the best validation score (eval_set = validation split)",
                "examples": len(test_set)}
        scored = [r for r in history if f"test_{cfg.main_metric}" in r]
        if scored:  # the optimistic number: the epoch that scores best on the test set itself
            top = max(scored, key=lambda r: r[f"test_{cfg.main_metric}"] * (1 if cfg.greater_is_better else -1))
            test["best_epoch_on_test"] = {"epoch": top["epoch"], **{k.removeprefix("test_"): v for k, v in top.items()
                                                                    if k.startswith("test_")}}
        if not quiet:
            print(f"{split_names[1]} ({len(test_set)} examples): {cfg.main_metric} "
                  f"{selected[cfg.main_metric]:.2f} at the selected epoch {best['epoch']}, "
                  f"{last[cfg.main_metric]:.2f} at the last", flush=True)
    summary = {
        "main_metric": cfg.main_metric,
        "best": best,
        "best_is": "selected on a validation split" if test_set is not None else
                   "the best epoch on the split it is measured on (optimistic)",
        "test": test,
        "final": history[-1],
        "history": history,
        "config": dataclasses.asdict(cfg),
        "train_examples": len(train_set),
        "eval_examples": len(eval_set),
        "steps": step,
        "wall_time_s": round(time.time() - t0, 2),
        "cpu_time_s": round(time.process_time() - c0, 2),  # this process's CPU time (all threads), every segment
        **(run_info or {}),
    }
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


__all__ = ["FinetuneConfig", "TASK_TYPES", "finetune", "lr_at", "model_inputs", "predict", "task_loss",
           "warmup_linear"]
