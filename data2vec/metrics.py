"""The run's record: metrics.jsonl (one JSON object per update) and the plots drawn from it.

`MetricsLog` appends one line per update and flushes it (a crash loses at most the line being written;
`read_metrics` skips a torn last line). On resume, `MetricsLog.truncate(path, step)` drops the lines written
after the checkpoint: they are recomputed identically. `write_plots` draws groups of curves with matplotlib's
Agg canvas (no display needed), each written to a temporary file and renamed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .checkpoint import atomic_write_text

__all__ = ["MetricsLog", "PLOT_GROUPS", "json_value", "read_metrics", "write_plots"]


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
