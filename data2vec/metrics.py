"""The run's record: metrics.jsonl (one JSON object per update) and the plots drawn from it.

`MetricsLog` appends one line per update and flushes it (a crash loses at most the line being written;
`read_metrics` skips a torn last line). On resume, `MetricsLog.truncate(path, step)` drops the lines written
after the checkpoint: they are recomputed identically. `write_plots` draws groups of curves with matplotlib's
Agg canvas (no display needed), each written to a temporary file and renamed; the representation-health
statistics (health/*, logged every `health_every` updates) go into one figure, a panel per statistic, with
the guard's thresholds from the run's config.json as dashed lines (docs/health.md shows how to read them).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .checkpoint import atomic_write_text

__all__ = ["HEALTH_PANELS", "MetricsLog", "PLOT_GROUPS", "json_value", "read_metrics", "write_plots"]


def json_value(v):
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


HEALTH_PANELS = {  # health.png: metric key -> (panel title, config.json "pretrain" field of its threshold, y range)
    "health/anisotropy": ("anisotropy (mean cosine)", "health_max_anisotropy", (-0.05, 1.05)),
    "health/rank_fraction": ("effective rank / min(N, D)", "health_min_effective_rank", (0.0, 1.05)),
    "health/pooled_effective_rank": ("pooled effective rank", None, None),
    "health/feature_std": ("feature std", None, None),
    "health/knn_acc": ("online k-NN accuracy (%)", None, (0.0, 100.0)),
}  # fixed ranges where the statistic has one, so plots of different runs compare at a glance


def save_figure(fig, plots_dir: Path, name: str) -> Path:
    """fig -> plots_dir/<name>.png through a temporary file (a reader never sees a half-written plot)."""
    path, tmp = plots_dir / f"{name}.png", plots_dir / f".{name}.tmp.png"
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)
    return path


def write_health_plot(records: list[dict], plots_dir: Path, thresholds: dict) -> Path | None:
    """health.png: one panel per health statistic present, the guard's threshold (when on) dashed."""
    from matplotlib.figure import Figure

    present = [k for k in HEALTH_PANELS if any(r.get(k) is not None for r in records)]
    if not present:
        return None
    cols = min(3, len(present))
    rows = -(-len(present) // cols)  # ceil
    fig = Figure(figsize=(3.4 * cols, 2.8 * rows), tight_layout=True)
    for i, key in enumerate(present):
        title, threshold_field, y_range = HEALTH_PANELS[key]
        ax = fig.add_subplot(rows, cols, i + 1)
        pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".")
        threshold = thresholds.get(threshold_field) if threshold_field else None
        if threshold:
            ax.axhline(threshold, color="tab:red", linestyle="--", label=f"guard {threshold:g}")
            ax.legend(fontsize="small")
        if y_range:
            ax.set_ylim(*y_range)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("update")
    return save_figure(fig, plots_dir, "health")


def write_plots(metrics_path: str | Path, plots_dir: str | Path) -> list[Path]:
    """Draw the curves of metrics.jsonl into plots_dir/<group>.png (matplotlib, no display needed), and the
    health/* statistics into plots_dir/health.png (thresholds read from config.json beside metrics.jsonl)."""
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
        written.append(save_figure(fig, plots_dir, name))
    config_path = Path(metrics_path).with_name("config.json")
    try:
        thresholds = json.loads(config_path.read_text(encoding="utf-8")).get("pretrain") or {}
    except (OSError, json.JSONDecodeError):
        thresholds = {}  # no config.json (a metrics file on its own): no threshold lines
    health = write_health_plot(records, plots_dir, thresholds)
    return written + ([health] if health else [])


class MetricsLog:
    """Appends one JSON line per update to metrics.jsonl (only rank 0 keeps one)."""

    def __init__(self, path: str | Path, *, fresh: bool):
        self.path = Path(path)
        if fresh:
            self.path.write_text("", encoding="utf-8")
        self.file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.file.write(json.dumps({k: json_value(v) for k, v in record.items()}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    @staticmethod
    def truncate(path: str | Path, step: int) -> None:
        """Keep only the records of updates <= step (those a resumed run would not recompute)."""
        kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
