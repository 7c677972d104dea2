"""GLUE's metrics (Wang et al. 2019), as the GLUE scorer computes them, and the paper's average.

What it implements
- Metrics (`glue_metrics`, percentages) computed by scikit-learn (accuracy; F1 of the positive class 1 for
  MRPC and QQP; Matthews correlation for CoLA, multi-class for AX) and scipy (Pearson and Spearman for
  STS-B), as the GLUE scorer does. Each result has a "score": the number the data2vec paper (Table 2) puts
  in its GLUE table: MRPC/QQP mean of accuracy and F1, STS-B mean of Pearson and Spearman, CoLA Matthews,
  else accuracy. Degenerate inputs: F1 with no positive label or prediction is 0, Matthews correlation of a
  one-class prediction (or label set) is 0 (both as sklearn); Pearson/Spearman of a constant side, which
  scipy reports as NaN, are 0 here (see `pearson`).
- `glue_average`: the paper's "Avg.": mean over the 8 tasks MNLI, QNLI, RTE, MRPC, QQP, STS-B, CoLA,
  SST-2 (WNLI excluded, as in BERT/RoBERTa/data2vec), MNLI counted once as the mean of matched and
  mismatched accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .glue import AVERAGE_TASKS, DIAGNOSTIC, get_task

# scipy.stats and sklearn.metrics (about 2 s to import) are imported by the functions that use them, so that
# importing this module (a test collection, a command that only names a task) stays cheap


def accuracy(predictions, labels) -> float:
    """Fraction of predictions equal to the label: (1/N) sum_i [p_i = y_i]."""
    from sklearn import metrics as sk_metrics
    return float(sk_metrics.accuracy_score(np.asarray(labels), np.asarray(predictions)))


def f1_binary(predictions, labels) -> float:
    """F1 of the positive class 1: 2 TP / (2 TP + FP + FN).

    0 when there are no positives at all (TP = FP = FN = 0: no label and no prediction is 1), as the GLUE
    scorer (sklearn's `f1_score`) reports it; we pass `zero_division=0` so that case is explicit, not a warning.
    """
    from sklearn import metrics as sk_metrics
    return float(sk_metrics.f1_score(np.asarray(labels), np.asarray(predictions), pos_label=1, average="binary",
                                     zero_division=0.0))


def matthews_corrcoef(predictions, labels) -> float:
    """Matthews correlation; binary: (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)).

    More than two classes (the AX diagnostic) use sklearn's multi-class form (Gorodkin's R_K), which reduces
    to the binary formula for two classes. 0 when the denominator is 0, i.e. when the predictions or the labels
    are all one class (a constant classifier carries no information), as sklearn and the GLUE scorer report it.
    """
    from sklearn import metrics as sk_metrics
    return float(sk_metrics.matthews_corrcoef(np.asarray(labels), np.asarray(predictions)))


def _is_constant(x: np.ndarray) -> bool:
    return len(x) < 2 or bool(np.all(x == x[0]))


def pearson(x, y) -> float:
    """Pearson r = sum (x - mean x)(y - mean y) / sqrt(sum (x - mean x)^2 sum (y - mean y)^2).

    Undefined (0/0) when either side is constant, e.g. a regressor that predicts the same score for every pair;
    scipy returns NaN there. We return 0.0 instead (no linear relation measurable, the same convention as the
    Matthews correlation above), so a collapsed model scores 0 rather than poisoning the best-epoch choice
    (NaN compares false with everything) and metrics.json (NaN is not JSON).
    """
    from scipy import stats as scipy_stats
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if _is_constant(x) or _is_constant(y):
        return 0.0
    return float(scipy_stats.pearsonr(x, y).statistic)


def spearman(x, y) -> float:
    """Spearman rho: the Pearson r of the average ranks (tied values share the mean of the ranks they span).

    0.0 when either side is constant (all ranks tied), as for `pearson`.
    """
    from scipy import stats as scipy_stats
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if _is_constant(x) or _is_constant(y):
        return 0.0
    return float(scipy_stats.spearmanr(x, y).statistic)


def glue_metrics(task: str, predictions, labels) -> dict[str, float]:
    """The task's official metric(s) in percent, plus "score" (the number of the paper's GLUE table).

    predictions: class ids (or STS-B scores); labels: the gold labels from `load_glue`.
    """
    spec = get_task(task)
    p, y = np.asarray(predictions), np.asarray(labels)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"glue_metrics: predictions {p.shape} and labels {y.shape} must be equal-length vectors")
    if len(y) == 0:
        raise ValueError("glue_metrics: no examples")
    if spec.is_regression:
        r = {"pearson": 100 * pearson(p, y), "spearman": 100 * spearman(p, y)}
        r["score"] = (r["pearson"] + r["spearman"]) / 2
    elif spec.name == "cola" or spec is DIAGNOSTIC:
        r = {"matthews": 100 * matthews_corrcoef(p, y)}
        r["score"] = r["matthews"]
    elif spec.name in ("mrpc", "qqp"):
        r = {"accuracy": 100 * accuracy(p, y), "f1": 100 * f1_binary(p, y)}
        r["score"] = (r["accuracy"] + r["f1"]) / 2
    else:
        r = {"accuracy": 100 * accuracy(p, y)}
        r["score"] = r["accuracy"]
    return r


def glue_average(results: Mapping[str, float | Mapping[str, float]], require_all: bool = True) -> float:
    """The data2vec paper's GLUE average (percent) over MNLI, QNLI, RTE, MRPC, QQP, STS-B, CoLA, SST-2.

    results: task -> `glue_metrics` dict (its "score" is used) or a plain score. MNLI: give "mnli" (or
    "mnli_m") and "mnli_mm" (mismatched); the task counts once as their mean (either alone if only one is
    given). WNLI is ignored. With require_all=False, averages over the tasks present.
    """
    scores: dict[str, float] = {}
    mnli: list[float] = []
    for name, value in results.items():
        v = float(value["score"] if isinstance(value, Mapping) else value)
        key = "".join(c for c in name.lower() if c.isalnum())
        if key in ("mnli", "mnlim", "mnlimatched", "mnlimm", "mnlimismatched"):
            mnli.append(v)
            continue
        key = get_task(key).name
        if key in AVERAGE_TASKS:
            scores[key] = v
    if mnli:
        scores["mnli"] = sum(mnli) / len(mnli)
    missing = [t for t in AVERAGE_TASKS if t not in scores]
    if missing and require_all:
        raise ValueError(f"glue_average: missing tasks {missing}; pass require_all=False to average the others")
    if not scores:
        raise ValueError("glue_average: no task among " + ", ".join(AVERAGE_TASKS))
    return sum(scores.values()) / len(scores)
