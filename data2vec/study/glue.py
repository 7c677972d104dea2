"""The text comparison's GLUE protocols (`data2vec compare --modality text`, docs/design.md section 8): each task's
data with a validation split carved from train, the majority-class floor, one fine-tuning recipe for every arm, a
linear probe on frozen features (SST-2), and BERT's masked-token accuracy on held-out text.

- Fine-tuning: RoBERTa's GLUE recipe shape (AdamW, 6 % warm-up, linear decay) at one lr for every arm; the score is
  the dev score at the epoch chosen on the carved validation split; the best epoch on dev itself is stored beside it,
  labelled optimistic (what `data2vec finetune` keeps without a validation split).
- Metrics as the data2vec paper's GLUE table: SST-2 and RTE accuracy, STS-B Pearson, MRPC the mean of accuracy and
  F1, CoLA Matthews correlation (every metric of the task is stored in the results file).
- The quick mode's synthetic GLUE (template sentences) is here too: its numbers only show that the pipeline runs.

Differences from the papers: the recipe is not tuned per task and arm (RoBERTa sweeps lr and batch per task), and
SST-2 may be a seeded subset of its training set (`--sst2-train-examples`).
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .budget import compute_settings
from .errors import StudyError
from .records import record, result_path, say, write_json
from .text_config import TextCompareConfig

TASK_METRIC = {"sst2": "accuracy", "stsb": "pearson", "mrpc": "score", "rte": "accuracy", "cola": "matthews",
               "qnli": "accuracy", "qqp": "score", "mnli": "accuracy", "wnli": "accuracy"}  # the reported number


def text_record(cfg: TextCompareConfig, arm: str, seed: int, protocol: str, score: float, metric: str,
                **details) -> dict:
    """`records.record` plus the metric's name and the GLUE root (every text results file is one)."""
    return {**record(cfg, arm, seed, protocol, score, **details), "metric": metric, "glue": cfg.glue}


# ---- GLUE data ----------------------------------------------------------------------------------------------


@dataclass
class TaskData:
    """One GLUE task encoded once for every arm: the fine-tuning part of train, the validation split carved from
    train, and the dev set that is only reported."""

    name: str
    regression: bool
    num_labels: int
    fit: object  # GlueDataset
    val: object  # GlueDataset (carved from train)
    dev: object  # GlueDataset (the GLUE dev set)
    fit_labels: np.ndarray
    train_examples: int  # training examples used (after the SST-2 subset), fit + val


def carve_validation(labels: np.ndarray, regression: bool, fraction: float, max_examples: int):
    """(fit_idx, val_idx): classification stratified by `label_splits.validation_split`; regression (STS-B scores) a
    seeded random fraction. Seed 0: the same split for every arm and seed."""
    from ..label_splits import validation_split

    if not regression:
        return validation_split(labels, fraction, seed=0, max_examples=max_examples)
    n_val = min(max_examples, max(1, int(round(fraction * len(labels)))))
    val = np.sort(np.random.default_rng(0).permutation(len(labels))[:n_val])
    keep = np.ones(len(labels), dtype=bool)  # True = stays in the fine-tuning part
    keep[val] = False
    return np.flatnonzero(keep), val


def check_glue(cfg: TextCompareConfig) -> None:
    """Every task's train.tsv and dev.tsv exist (before any pretraining starts)."""
    from tasks.text.glue import find_task_file, get_task

    for task in cfg.tasks:
        try:
            spec = get_task(task)
            for split in ("train", "dev"):
                find_task_file(spec.name, split, cfg.glue)
        except (ValueError, FileNotFoundError) as error:
            raise StudyError(f"--glue {cfg.glue}: {error}; fix: point --glue at the GLUE root or drop {task} from "
                             "--tasks") from None


def load_task(cfg: TextCompareConfig, task: str, tok) -> TaskData:
    from tasks.text import glue

    spec = glue.get_task(task)
    train = glue.load_glue(spec.name, "train", cfg.glue)
    if spec.name == "sst2" and cfg.sst2_train_examples and cfg.sst2_train_examples < len(train):
        keep = sorted(random.Random(0).sample(range(len(train)), cfg.sst2_train_examples))  # same for every arm
        train = [train[i] for i in keep]
    dev = glue.load_glue(spec.name, "dev", cfg.glue)
    labels = np.asarray([ex.label for ex in train])
    fit_idx, val_idx = carve_validation(labels, spec.is_regression, cfg.val_fraction, cfg.val_max)
    return TaskData(spec.name, spec.is_regression, spec.num_labels,
                    glue.GlueDataset([train[i] for i in fit_idx], tok, cfg.max_length),
                    glue.GlueDataset([train[i] for i in val_idx], tok, cfg.max_length),
                    glue.GlueDataset(dev, tok, cfg.max_length), labels[fit_idx], len(train))


def task_score(task: str, predictions, labels) -> tuple[float, dict]:
    """(the reported number, every metric of the task), in percent."""
    from tasks.text.glue_metrics import glue_metrics

    metrics = glue_metrics(task, np.asarray(predictions), np.asarray(labels))
    return float(metrics[TASK_METRIC.get(task, "score")]), metrics


# ---- evaluation ---------------------------------------------------------------------------------------------


def evaluate_majority(cfg: TextCompareConfig, task: TaskData) -> None:
    """The majority class of the fine-tuning labels predicted for every dev example (STS-B: their mean score)."""
    path = result_path(cfg, "majority", 0, task.name)
    if path.is_file():
        return
    dev_labels = np.asarray([f["labels"] for f in task.dev.features])
    if task.regression:
        constant = float(task.fit_labels.mean())
    else:
        constant = int(np.bincount(task.fit_labels.astype(int), minlength=task.num_labels).argmax())
    score, metrics = task_score(task.name, np.full(len(dev_labels), constant), dev_labels)
    write_json(path, text_record(cfg, "majority", 0, task.name, score, TASK_METRIC.get(task.name, "score"),
                                 prediction=constant, metrics=metrics, dev_examples=len(dev_labels)))
    say(f"majority {task.name}: {score:.2f} (predicts {constant:g})")


def finetune_task(cfg: TextCompareConfig, arm: str, seed: int, backbone, task: TaskData, tok) -> None:
    """One fine-tuning run (the same recipe for every arm); the epoch is chosen on the carved validation split and
    the dev set is scored with those weights (and with the last epoch's)."""
    from tasks.text.glue import GlueCollator

    from ..checkpoint import set_seed
    from ..finetune import FinetuneConfig, finetune
    from ..heads import SequenceClassificationHead, TaskModel

    path = result_path(cfg, arm, seed, task.name)
    if path.is_file():
        return
    set_seed(seed)  # the head's initial weights
    model = TaskModel(copy.deepcopy(backbone), SequenceClassificationHead(backbone.cfg.dim, task.num_labels,
                                                                          style=tok.style))
    epochs = cfg.task_epochs.get(task.name, 10)
    recipe = dict(lr=cfg.finetune_lr, batch_size=cfg.finetune_batch_size, epochs=epochs)
    fcfg = FinetuneConfig(task_type="regression" if task.regression else "classification",
                          main_metric=TASK_METRIC.get(task.name, "score"), seed=seed, device=cfg.device,
                          save_best=False, log_every=0, test_every_epoch=True, **recipe, **compute_settings(cfg))

    def metric_fn(outputs, labels):
        preds = outputs if task.regression else outputs.argmax(-1)
        return task_score(task.name, preds, labels)[1]

    run_dir = Path(cfg.runs) / f"finetune-{arm}-seed{seed}-{task.name}"
    s = finetune(model, task.fit, task.val, fcfg, run_dir, metric_fn,
                 collate_fn=GlueCollator(tok.pad_id, regression=task.regression), quiet=True, test_set=task.dev,
                 resume=True)  # a run stopped between epochs goes on from its last one
    key = fcfg.main_metric
    selected, last, on_dev = s["test"]["selected"], s["test"]["last"], s["test"]["best_epoch_on_test"]
    write_json(path, text_record(
        cfg, arm, seed, task.name, selected[key], key, selected_epoch=selected["epoch"], epochs=epochs,
        last_epoch_score=last[key], best_on_dev=on_dev[key], best_on_dev_epoch=on_dev["epoch"],
        validation_best=s["best"][key], dev_metrics=selected,
        dev_metrics_last=last, train_examples=len(task.fit), validation_examples=len(task.val),
        dev_examples=len(task.dev), seconds=s["wall_time_s"], recipe=recipe, history=s["history"],
        selection="score: the epoch chosen on a validation split carved from the training data; best_on_dev: the "
                  "epoch that scores best on the dev set itself (optimistic, what `data2vec finetune` without a "
                  "validation split keeps), reported beside, never as the score"))
    say(f"{arm} seed {seed} {task.name}: {selected[key]:.2f} {key} (epoch {selected['epoch']} of {epochs} chosen on "
        f"validation; last {last[key]:.2f}; {s['wall_time_s']:.0f} s)")


def batches(dataset, pad_id: int, size: int = 128):
    from tasks.text.glue import GlueCollator

    collate = GlueCollator(pad_id)
    return [collate([dataset[j] for j in range(i, min(i + size, len(dataset)))]) for i in range(0, len(dataset), size)]


def probe_sst2(cfg: TextCompareConfig, arm: str, seed: int, backbone, task: TaskData, tok) -> None:
    """Logistic regression on frozen mean-pooled final features; C chosen on the carved validation split."""
    from ..probe import extract_features, linear_probe

    path = result_path(cfg, arm, seed, "sst2-linear")
    if path.is_file():
        return
    t0 = time.time()
    backbone = backbone.to(cfg.device)
    fit_x, fit_y = extract_features(backbone, batches(task.fit, tok.pad_id), "mean", cfg.device)
    val_x, val_y = extract_features(backbone, batches(task.val, tok.pad_id), "mean", cfg.device)
    dev_x, dev_y = extract_features(backbone, batches(task.dev, tok.pad_id), "mean", cfg.device)
    out = linear_probe(fit_x, fit_y, dev_x, dev_y, seed=seed, val=(val_x, val_y))
    write_json(path, text_record(cfg, arm, seed, "sst2-linear", out["accuracy"], "accuracy", features="final/mean",
                                 C=out["C"], validation_accuracy=out["cv_accuracy"], train_examples=len(fit_y),
                                 seconds=round(time.time() - t0, 2)))
    say(f"{arm} seed {seed} sst2-linear: {out['accuracy']:.2f} % (C {out['C']:g} chosen on validation)")


def mlm_heldout(cfg: TextCompareConfig, seed: int, method, tok) -> None:
    """Masked-token accuracy of the MLM head on --heldout blocks: BERT's corruption with a generator seeded 0 (the
    same positions for every seed), eval mode, accuracy = correct / predicted over all blocks."""
    import torch

    from tasks.text.corpus import TokenBlockDataset

    path = result_path(cfg, "bert", seed, "mlm-heldout")
    if path.is_file():
        return
    blocks = TokenBlockDataset(cfg.heldout, tok, block_size=cfg.seq_len,
                               cache_dir=Path(cfg.runs) / "text-data" / "heldout-cache")
    n = min(len(blocks), cfg.heldout_max_blocks)
    generator = torch.Generator().manual_seed(0)
    method.eval()
    correct, predicted = 0, 0
    with torch.no_grad():
        for i in range(0, n, 64):
            items = [blocks[j] for j in range(i, min(i + 64, n))]
            ids = torch.stack([b["input_ids"] for b in items])  # (B, T)
            pad = torch.stack([b["padding_mask"] for b in items])  # (B, T) True = pad
            corrupted, mask, _ = method.corrupt(ids, pad, generator=generator)  # mask (B, T) True = predicted
            features = method.backbone(corrupted.to(cfg.device), padding_mask=pad.to(cfg.device))  # (B, T, D)
            _, hits = method.mlm_loss(features, ids.to(cfg.device), mask.to(cfg.device))
            correct += int(hits)
            predicted += int(mask.sum())
    method.train()
    score = 100.0 * correct / max(1, predicted)
    write_json(path, text_record(cfg, "bert", seed, "mlm-heldout", score, "masked-token accuracy",
                                 heldout=cfg.heldout, blocks=n, predicted_tokens=predicted, correct=correct))
    say(f"bert seed {seed} mlm-heldout: {score:.2f} % of {predicted} masked tokens")


# ---- the quick mode's synthetic GLUE ------------------------------------------------------------------------


POSITIVE = ("good", "great", "lovely", "fine", "wonderful", "superb", "charming", "bright")
NEGATIVE = ("bad", "awful", "dull", "poor", "terrible", "weak", "boring", "grim")
FILLER = ("the", "film", "story", "was", "a", "very", "plot", "and", "acting", "really", "music", "ending")


def write_synthetic_glue(root: Path, train: int = 300, dev: int = 100, seed: int = 0) -> Path:
    """A tiny GLUE-format folder (SST-2 and STS-B train.tsv / dev.tsv) of template sentences, for --quick when no
    --glue is given: SST-2 labels by sentiment words, STS-B scores 5 x the word overlap of a pair. Synthetic: its
    numbers only show that the pipeline runs. Also writes heldout.txt (template sentences for mlm-heldout)."""
    rng = random.Random(seed)

    def sentence(label: int) -> str:
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 8))]
        for _ in range(rng.randint(1, 2)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
        return " ".join(words)

    for split, n in (("train", train), ("dev", dev)):
        (root / "SST-2").mkdir(parents=True, exist_ok=True)
        labels = [rng.randint(0, 1) for _ in range(n)]
        rows = ["sentence\tlabel"] + [f"{sentence(y)}\t{y}" for y in labels]
        (root / "SST-2" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
        (root / "STS-B").mkdir(parents=True, exist_ok=True)
        rows = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
        for i in range(n):
            a = sentence(rng.randint(0, 1)).split()
            b = [w if rng.random() < 0.5 else rng.choice(FILLER) for w in a]
            score = 5.0 * len(set(a) & set(b)) / len(set(a) | set(b))
            rows.append(f"{i}\tmain\tx\t2012\t{i}\tnone\tnone\t{' '.join(a)}\t{' '.join(b)}\t{score:.3f}")
        (root / "STS-B" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    (root / "heldout.txt").write_text("\n".join(sentence(rng.randint(0, 1)) for _ in range(200)) + "\n")
    return root
