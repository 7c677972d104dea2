"""The report of a budget curve (`data2vec.study.curve`), built from its points' results files alone.

`write_curve_report(out)` rebuilds every point's own report (`report.write_report`: summary.json, tables, plots),
then writes
- OUT/curve_summary.json: per (arm, protocol) one entry per budget with mean, std, runs and seeds; per method and
  budget the updates, samples seen and measured pretraining minutes; the CPU the budgets were calibrated on;
- OUT/curve.md and curve.txt: one table per protocol, arms as rows and budgets as columns ("mean +- std (n)"),
  and the samples each method saw at each budget;
- OUT/plots/curve-<protocol>.png: the score against the budget (left: calibrating-CPU minutes, log scale; right:
  samples seen, log scale, which no machine changes), mean +- std over seeds, with the floors: random init and raw
  pixels as horizontal lines (they do not depend on the budget; one far off the curves, such as SST-2's majority
  class, is named with its score in the legend instead, so the differences between the curves stay readable),
  supervised from scratch as its own curve (it gets the same minutes plus the fine-tuning time).

Differences from the original: the papers publish no such curve; this layout is the project's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .curve import load_curve
from .records import write_json
from .report import ARM_LABELS, FLOOR_ORDER, PROTOCOL_ORDER, in_order, write_report

FLAT_FLOORS = ("random", "pixels", "features", "majority")  # drawn as horizontal lines: the same at every budget


def collect(out: Path, plots: bool = True) -> dict:
    """{"points": [...budgets], "rows": {(arm, protocol): {budget: row}}, "budget": {method: {budget: {...}}}}."""
    curve = load_curve(out)
    rows: dict[tuple[str, str], dict[float, dict]] = {}
    spent: dict[str, dict[float, dict]] = {}
    budgets = []
    for key, folder in curve["points"].items():
        point = out / folder
        if not (point / "config.json").is_file():
            continue  # registered, not started
        minutes = float(key)
        budgets.append(minutes)
        summary = write_report(point, plots=plots)
        for row in summary["rows"]:
            rows.setdefault((row["arm"], row["protocol"]), {})[minutes] = row
        for arm, b in summary["budget"].items():
            spent.setdefault(arm, {})[minutes] = {"steps": b["steps"], "samples_seen": b["samples_seen"],
                                                   "train_minutes_mean": b["train_minutes_mean"],
                                                   "seeds": b["seeds"]}
    return {"points": sorted(budgets), "rows": rows, "budget": spent}


def calibration_machine(out: Path) -> str:
    """The CPU (or GPU) the curve's budgets were calibrated on, as recorded with the calibration."""
    table = json.loads((out / "calibration.json").read_text()) if (out / "calibration.json").is_file() else {}
    machines = {json.dumps(e.get("machine", {}), sort_keys=True) for e in table.values() if "s_per_update" in e}
    names = []
    for m in map(json.loads, sorted(machines)):
        name = m.get("cuda") or m.get("cpu_model") or "CPU model not recorded"
        names.append(f"{name} ({m.get('platform', '?')}, {m.get('torch_threads', '?')} thread(s))")
    return "; ".join(names) or "not calibrated yet"


def format_curve(data: dict, machine: str, precision: str) -> tuple[str, str]:
    budgets = data["points"]
    heads = [f"{b:g} min" for b in budgets]
    text = [f"budgets calibrated on: {machine}; precision {precision}", ""]
    md = [f"Budgets in minutes of pretraining per arm, calibrated on: {machine}; precision {precision}.", ""]
    protocols = in_order({p for _, p in data["rows"]}, PROTOCOL_ORDER)
    for protocol in protocols:
        arms = in_order({a for a, p in data["rows"] if p == protocol}, FLOOR_ORDER)
        width = max(len(ARM_LABELS.get(a, a)) for a in arms)
        text += [protocol, f"{'arm':{width}s}" + "".join(f"{h:>20s}" for h in heads)]
        md += [f"**{protocol}**", "", "| arm | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
        for arm in arms:
            by = data["rows"][(arm, protocol)]
            cells = [f"{by[b]['mean']:.1f} ± {by[b]['std']:.1f} ({len(by[b]['runs'])})" if b in by else "—"
                     for b in budgets]
            text.append(f"{ARM_LABELS.get(arm, arm):{width}s}" + "".join(f"{c:>20s}" for c in cells))
            md.append(f"| {ARM_LABELS.get(arm, arm)} | " + " | ".join(cells) + " |")
        text.append("")
        md.append("")
    text.append("samples seen per pretraining run (updates x batch)")
    md += ["Samples seen per pretraining run (updates x batch):", "", "| method | " + " | ".join(heads) + " |",
           "|---|" + "---|" * len(heads)]
    for arm, by in sorted(data["budget"].items()):
        cells = [f"{by[b]['samples_seen']:,}" if b in by else "—" for b in budgets]
        text.append(f"{ARM_LABELS.get(arm, arm):20s}" + "".join(f"{c:>20s}" for c in cells))
        md.append(f"| {ARM_LABELS.get(arm, arm)} | " + " | ".join(cells) + " |")
    return "\n".join(text) + "\n", "\n".join(md) + "\n"


def curve_extent(data: dict, protocol: str, arms: list[str]) -> list[float]:
    """The lowest and highest mean -+ std of the curves (the arms that are not flat floors); [] without any."""
    rows = [row for arm in arms if arm not in FLAT_FLOORS for row in data["rows"][(arm, protocol)].values()]
    return [min(r["mean"] - r["std"] for r in rows), max(r["mean"] + r["std"] for r in rows)] if rows else []


def floor_window(data: dict, protocol: str, arms: list[str]) -> tuple[float, float] | None:
    """Where a floor's line is drawn: within the curves' span (at least 5 points) of them, so that a floor far off
    the curves (SST-2's majority class at 51 % under curves at 78-80 %) does not squash the differences the plot is
    for; None when there are only floors (all drawn)."""
    extent = curve_extent(data, protocol, arms)
    if not extent:
        return None
    margin = max(extent[1] - extent[0], 5.0)
    return extent[0] - margin, extent[1] + margin


def padded(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    pad = 0.05 * max(high - low, 1.0)
    return low - pad, high + pad


def plot_protocol(out: Path, data: dict, protocol: str) -> Path:
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig = Figure(figsize=(10, 3.8), tight_layout=True)
    ax_min, ax_samples = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    arms = in_order({a for a, p in data["rows"] if p == protocol}, FLOOR_ORDER)
    shown = floor_window(data, protocol, arms)
    levels = []  # the floors drawn
    for i, arm in enumerate(arms):
        by = data["rows"][(arm, protocol)]
        budgets = sorted(by)
        means = np.array([by[b]["mean"] for b in budgets])
        stds = np.array([by[b]["std"] for b in budgets])
        label, colour = ARM_LABELS.get(arm, arm), f"C{i}"
        if arm in FLAT_FLOORS:
            level = float(np.mean(means))
            off_axis = shown is not None and not shown[0] <= level <= shown[1]
            for ax in (ax_min, ax_samples):  # a floor far off the curves is named in the legend, not drawn
                ax.axhline(level, color=colour, ls="--", lw=1, visible=not off_axis,
                           label=f"{label}: {level:.1f}, off the axis" if off_axis else label)
            levels += [] if off_axis else [level]
            continue
        ax_min.errorbar(budgets, means, yerr=stds, fmt="o-", ms=4, capsize=2, color=colour, label=label)
        seen = data["budget"].get(arm, {})
        if seen:  # a pretraining method: its samples seen at each budget
            xs = [seen[b]["samples_seen"] for b in budgets if b in seen]
            ys = [by[b]["mean"] for b in budgets if b in seen]
            es = [by[b]["std"] for b in budgets if b in seen]
            ax_samples.errorbar(xs, ys, yerr=es, fmt="o-", ms=4, capsize=2, color=colour, label=label)
    ax_min.set_xscale("log")
    ax_min.set_xticks(sorted({b for arm in arms for b in data["rows"][(arm, protocol)]}))  # the budgets tried
    ax_min.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax_min.set_xlabel("pretraining budget per arm (minutes on the calibrating CPU)")
    ax_samples.set_xscale("log")
    ax_samples.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 10k, 20k, 50k, 100k, ...
    ax_samples.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1e6:g}M" if x >= 1e6 else f"{x / 1e3:g}k"))
    for ax in (ax_min, ax_samples):  # labelled decades only: the 2..9 x 10^k labels overlap
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax_samples.set_xlabel("samples seen in pretraining (updates x batch)")
    y_range = padded([*levels, *curve_extent(data, protocol, arms)]) if shown is not None else None
    for ax in (ax_min, ax_samples):
        ax.set_ylabel(f"{protocol} (test, mean ± std)")
        if y_range is not None:  # the curves and the floors drawn, with a 5 % margin
            ax.set_ylim(*y_range)
    ax_min.legend(fontsize=7)
    ax_samples.set_title("pretraining methods; floors as lines", fontsize=9)
    path = out / "plots" / f"curve-{protocol.replace('%', 'pct')}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def write_curve_report(out: str | Path, plots: bool = True) -> dict:
    """The curve's tables and summary, and (unless `plots` is False) every point's plots and the curve plots."""
    out = Path(out)
    data = collect(out, plots=plots)
    curve = load_curve(out)
    machine = calibration_machine(out)
    text, md = format_curve(data, machine, curve.get("precision", "fp32"))
    (out / "curve.txt").write_text(text)
    (out / "curve.md").write_text(md)
    protocols = sorted({p for _, p in data["rows"]})
    for protocol in protocols if plots else ():
        plot_protocol(out, data, protocol)
    summary = {"points": data["points"], "calibrated_on": machine, "precision": curve.get("precision", "fp32"),
               "rows": [{"arm": a, "protocol": p, "by_budget": {f"{b:g}": {k: r[k] for k in ("mean", "std", "runs",
                                                                                           "seeds")}
                                                                for b, r in sorted(by.items())}}
                        for (a, p), by in sorted(data["rows"].items())],
               "budget": {arm: {f"{b:g}": v for b, v in sorted(by.items())} for arm, by in data["budget"].items()}}
    write_json(out / "curve_summary.json", summary)
    return summary
