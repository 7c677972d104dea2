"""The report of `data2vec compare`, built from its results files alone: summary.json, table.md, table.txt, plots/.

`write_report(out)` reads every `<out>/<arm>/seed<k>/<protocol>.json`, aggregates each (arm, protocol) over the
seeds (mean, population std, median, the runs), and writes
- summary.json: {"rows": [{"arm", "protocol", "mean", "std", "median", "runs", "seeds"}], "budget": {...},
  "time_to_match": [...]} (when data2vec 2.0's online k-NN reaches v1's final one: `time_to_match`);
- table.md / table.txt: arms as rows (floors first), protocols as columns, "mean +- std (n)"; for the text study
  (config.json's modality) the medians after it, and the optimistic best-epoch-on-dev scores in a table of their own;
- plots/accuracy.png: accuracy per arm and protocol with the spread over seeds;
- plots/curves.png: each method's pretraining loss and its online k-NN accuracy (images, train-split probe) or token
  anisotropy (text) against pretraining time on the budget's clock.
It runs after every finished result, and `data2vec compare --report-only --out DIR` reruns it, so a committed
results folder regenerates its table and plots with one command.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .protocols import UPDATES_ALONE

FLOOR_ORDER = ("majority", "random", "pixels", "features", "supervised")
PROTOCOL_ORDER = ("knn@100%", "linear@100%", "knn@1%", "linear@1%", "knn@10%", "linear@10%", "finetune@1%",
                  "finetune@10%", "finetune@100%", "sst2", "sst2-linear", "stsb", "mrpc", "rte", "cola", "mlm-heldout",
                  "squad-heldout", "xquad-en", "xquad-de", "xquad-es")  # other XQuAD languages follow by name
ARM_LABELS = {"random": "random init (same encoder)", "pixels": "raw pixels",
              "features": "raw features (log-mel / MFCC, mean+std)",
              "supervised": "supervised from scratch (budget + fine-tuning time)", "data2vec": "data2vec",
              "data2vec2": "data2vec 2.0", "dino": "DINO", "bert": "BERT-MLM",
              "majority": "majority class (STS-B: mean score)"}


def read_results(out: str | Path) -> tuple[list[dict], list[dict]]:
    """(evaluation records, pretraining records) found under `out`."""
    evals, pretrains = [], []
    for path in sorted(Path(out).glob("*/seed*/*.json")):
        rec = json.loads(path.read_text())
        if rec.get("protocol") == "pretrain-failed":
            continue  # listed by `failures`
        (pretrains if rec.get("protocol") == "pretrain" else evals).append(rec)
    return evals, pretrains


def failures(out: str | Path) -> list[dict]:
    """The pretraining runs that diverged or collapsed (`<arm>/seed<k>/pretrain-failed.json`)."""
    return [json.loads(p.read_text()) for p in sorted(Path(out).glob("*/seed*/pretrain-failed.json"))]


def in_order(items, preferred) -> list:
    return sorted(items, key=lambda x: (preferred.index(x) if x in preferred else len(preferred), x))


def selected_validation(record: dict) -> float | None:
    """The carved validation split's score of what a text result selected (fine-tuning: its epoch; the probe: its
    C); None for results without one (image probes keep a score per feature choice in `validation_scores`)."""
    details = record["details"]
    return next((details[k] for k in ("validation_best", "validation_accuracy") if details.get(k) is not None), None)


def aggregate(evals: list[dict]) -> list[dict]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for rec in evals:
        groups.setdefault((rec["arm"], rec["protocol"]), []).append(rec)
    rows = []
    for (arm, protocol), recs in groups.items():
        recs = sorted(recs, key=lambda r: r["seed"])
        runs = [r["score"] for r in recs]
        on_dev = [r["details"]["best_on_dev"] for r in recs if r["details"].get("best_on_dev") is not None]
        validation = [v for v in map(selected_validation, recs) if v is not None]
        rows.append({"arm": arm, "protocol": protocol, "mean": float(np.mean(runs)), "std": float(np.std(runs)),
                     "median": float(np.median(runs)), "runs": runs, "seeds": [r["seed"] for r in recs],
                     "features": sorted({r["details"].get("features") for r in recs if r["details"].get("features")}),
                     "best_on_dev_runs": on_dev,  # text fine-tuning: the optimistic best epoch on dev, beside
                     "validation_runs": validation})
    return rows


def budget_summary(pretrains: list[dict]) -> dict:
    by_arm: dict[str, list[dict]] = {}
    for rec in pretrains:
        by_arm.setdefault(rec["arm"], []).append(rec)
    return {arm: {"steps": recs[0]["steps"], "batch_size": recs[0]["batch_size"],
                  "samples_seen": recs[0]["samples_seen"],
                  "s_per_update_calibrated": recs[0]["calibration"]["s_per_update"],
                  "train_minutes_mean": float(np.mean([r["train_seconds"] for r in recs]) / 60),
                  "train_minutes_runs": [round(r["train_seconds"] / 60, 2) for r in recs],
                  "clock": recs[0].get("clock", "wall"),
                  "wall_minutes_runs": [round(r.get("train_wall_seconds", r["train_seconds"]) / 60, 2) for r in recs],
                  "final_loss": [r.get("final_loss") for r in recs], "seeds": [r["seed"] for r in recs]}
            for arm, recs in by_arm.items()}


def time_to_match(pretrains: list[dict], reference: str = "data2vec", challenger: str = "data2vec2",
                  window: int = 3) -> list[dict]:
    """Per seed: when `challenger`'s online k-NN first reaches `reference`'s final one, as a fraction of
    `reference`'s pretraining time (does data2vec 2.0 reach v1's final k-NN in a third of its time?).

    Both sides are smoothed over `window` health passes, since one pass scores only a few dozen probe images:
    the target is the mean of `reference`'s last `window` values, and the challenger's time is the end of the
    first run of `window` consecutive passes whose mean reaches it (None if it never does)."""
    curves = {(r["arm"], r["seed"]): r.get("knn_curve") or [] for r in pretrains}
    matches = []
    for (arm, seed), ref in sorted(curves.items()):
        mine = curves.get((challenger, seed), [])
        if arm != reference or len(ref) < window or len(mine) < window:
            continue
        target = float(np.mean([p["knn"] for p in ref[-window:]]))
        ref_seconds = float(ref[-1]["seconds"])
        reached = next((mine[i + window - 1]["seconds"] for i in range(len(mine) - window + 1)
                        if np.mean([p["knn"] for p in mine[i:i + window]]) >= target), None)
        matches.append({"seed": seed, "reference": reference, "challenger": challenger, "target_knn": target,
                        "reference_seconds": ref_seconds, "challenger_seconds": reached,
                        "fraction": None if reached is None else float(reached) / ref_seconds})
    return matches


def _grid(arms: list[str], protocols: list[str], cell: dict) -> tuple[list[str], list[str]]:
    """One table, arms as rows and protocols as columns, as plain text and as Markdown lines."""
    width = max(len(ARM_LABELS.get(a, a)) for a in arms) if arms else 10
    head = f"{'arm':{width}s}" + "".join(f"{p:>20s}" for p in protocols)
    text = [head, "-" * len(head)]
    md = ["| arm | " + " | ".join(protocols) + " |", "|---|" + "---|" * len(protocols)]
    for arm in arms:
        cells = [cell.get((arm, p), "—") for p in protocols]
        text.append(f"{ARM_LABELS.get(arm, arm):{width}s}" + "".join(f"{c:>20s}" for c in cells))
        md.append(f"| {ARM_LABELS.get(arm, arm)} | " + " | ".join(cells) + " |")
    return text, md


def _spread(values: list[float]) -> str:
    """One cell: mean ± population std (number of seeds)."""
    return f"{np.mean(values):.1f} ± {np.std(values):.1f} ({len(values)})"


def _spread_cells(rows: list[dict], key: str) -> dict:
    """{(arm, protocol): cell} of the rows whose `key` list of per-seed values is not empty."""
    return {(r["arm"], r["protocol"]): _spread(r[key]) for r in rows if r.get(key)}


def format_tables(rows: list[dict], budget: dict, medians: bool = False) -> tuple[str, str]:
    """The results table (mean ± std (seeds)); with `medians` (the text study) a table of medians after it; and,
    where fine-tuning records carry it, the optimistic best-epoch-on-dev table, labelled as such."""
    arms = in_order({r["arm"] for r in rows}, FLOOR_ORDER)
    protocols = in_order({r["protocol"] for r in rows}, PROTOCOL_ORDER)
    text, md = _grid(arms, protocols, {(r["arm"], r["protocol"]): _spread(r["runs"]) for r in rows})
    extra = []
    if medians:
        extra.append(("median over seeds (same cells)",
                      {(r["arm"], r["protocol"]): f"{r['median']:.1f} ({len(r['runs'])})" for r in rows}))
        extra.append(("validation split carved from the training data, at the selected epoch (or C): what a "
                      "tuning run compares (--set), mean ± std (seeds)", _spread_cells(rows, "validation_runs")))
    extra.append(("optimistic, NOT the reported score: the best epoch on the dev set itself (what `data2vec "
                  "finetune` keeps without a validation split), mean ± std (seeds)",
                  _spread_cells(rows, "best_on_dev_runs")))
    extra = [(title, cells) for title, cells in extra if cells]
    for title, cells in extra:
        sub_arms = in_order({a for a, _ in cells}, FLOOR_ORDER)
        sub_protocols = in_order({p for _, p in cells}, PROTOCOL_ORDER)
        sub_text, sub_md = _grid(sub_arms, sub_protocols, cells)
        text += ["", title, *sub_text]
        md += ["", f"{title}:", "", *sub_md]
    if budget:
        text.append("")
        md.append("")
        md.append("| method | updates x batch | calibrated s/update | pretraining minutes per seed (budget clock) "
                  "| wall-clock minutes per seed |")
        md.append("|---|---|---|---|---|")
        for arm in in_order(budget, ()):
            b = budget[arm]
            minutes = ", ".join(f"{m:.1f}" for m in b["train_minutes_runs"])
            wall = ", ".join(f"{m:.1f}" for m in b["wall_minutes_runs"])
            text.append(f"{arm}: {b['steps']} updates x {b['batch_size']} = {b['samples_seen']} samples, "
                        f"{b['s_per_update_calibrated']:.3f} s/update calibrated ({b['clock']} clock), {minutes} min "
                        f"measured ({wall} min wall-clock)")
            md.append(f"| {ARM_LABELS.get(arm, arm)} | {b['steps']} x {b['batch_size']} | "
                      f"{b['s_per_update_calibrated']:.3f} ({b['clock']}) | {minutes} | {wall} |")
    text.append("")
    squad = "; SQuAD: F1 on the held-out half of dev; XQuAD: F1 zero-shot" \
        if any(p.startswith(("squad-", "xquad-")) for p in protocols) else ""
    text.append(f"scores on the evaluation split (images: the test split; GLUE: dev{squad}), mean ± std (number of "
                "seeds); every knob chosen on a validation split carved from the training data")
    return "\n".join(text) + "\n", "\n".join(md) + "\n"


def write_study_plots(out: Path, rows: list[dict], pretrains: list[dict]) -> list[Path]:
    from matplotlib.figure import Figure

    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    written = []
    arms = in_order({r["arm"] for r in rows}, FLOOR_ORDER)
    protocols = in_order({r["protocol"] for r in rows}, PROTOCOL_ORDER)
    by = {(r["arm"], r["protocol"]): r for r in rows}
    if rows:
        fig = Figure(figsize=(max(6, 1.4 * len(protocols)) + 2.5, 3.8), tight_layout=True)
        ax = fig.add_subplot()
        width = 0.8 / max(1, len(arms))
        for i, arm in enumerate(arms):
            xs = [j + i * width for j, p in enumerate(protocols) if (arm, p) in by]
            ms = [by[(arm, p)]["mean"] for p in protocols if (arm, p) in by]
            ss = [by[(arm, p)]["std"] for p in protocols if (arm, p) in by]
            ax.bar(xs, ms, width, yerr=ss, capsize=2, label=ARM_LABELS.get(arm, arm))
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(protocols))], protocols, fontsize=8)
        if any(p.startswith(("knn@", "linear@", "finetune@")) for p in protocols):  # images
            ax.set_ylabel("test accuracy (%)")
            ax.set_title("accuracy per arm and protocol (mean ± std over seeds)")
        else:  # text: each task's own metric (accuracy, Pearson, Matthews, F1) x 100
            ax.set_ylabel("score x 100 (GLUE dev; SQuAD/XQuAD F1)")
            ax.set_title("score per arm and task, each task's metric (mean ± std over seeds)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never on them
        fig.savefig(plots / "accuracy.png", dpi=100)
        written.append(plots / "accuracy.png")
    if pretrains:
        fig = Figure(figsize=(10, 3.6), tight_layout=True)
        ax_loss, ax_knn = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        colours = {}
        text_health = False
        for rec in sorted(pretrains, key=lambda r: (r["arm"], r["seed"])):
            colour = colours.setdefault(rec["arm"], f"C{len(colours)}")
            label = ARM_LABELS.get(rec["arm"], rec["arm"]) if rec["seed"] == min(
                r["seed"] for r in pretrains if r["arm"] == rec["arm"]) else None
            curve = rec.get("curve", [])
            ax_loss.plot([c["seconds"] / 60 for c in curve], [c["loss"] for c in curve], color=colour, alpha=0.7,
                         label=label)
            knn = rec.get("knn_curve", [])
            if knn:  # images: the online k-NN of the health pass
                ax_knn.plot([c["seconds"] / 60 for c in knn], [c["knn"] for c in knn], "o-", ms=3, color=colour,
                            alpha=0.7, label=label)
            else:  # text: the probe tokens' anisotropy (mean cosine between tokens; the guard stops data2vec at 0.6)
                health = [c for c in rec.get("health_curve", []) if "anisotropy" in c]
                ax_knn.plot([c["seconds"] / 60 for c in health], [c["anisotropy"] for c in health], "o-", ms=3,
                            color=colour, alpha=0.7, label=label)
                text_health = True
        ax_loss.set_xlabel("pretraining time (min, the budget's clock)")
        ax_loss.set_ylabel("loss (each method's own objective)")
        ax_loss.set_yscale("log")
        ax_loss.legend(fontsize=7)
        ax_knn.set_xlabel("pretraining time (min, the budget's clock)")
        if text_health:
            ax_knn.set_ylabel("token anisotropy (mean cosine)")
            ax_knn.set_title("health pass on a fixed probe batch", fontsize=9)
        else:
            ax_knn.set_ylabel("online k-NN accuracy (%)")
            ax_knn.set_title("train-split probe (bank 3/4, queries 1/4)", fontsize=9)
        ax_knn.legend(fontsize=7)
        fig.savefig(plots / "curves.png", dpi=100)
        written.append(plots / "curves.png")
    return written


def older_supervised_rule(out: Path, evals: list[dict]) -> str | None:
    """A line for the tables when the supervised floor's epochs came from the older rule (the whole fine-tuning
    run's time per epoch, evaluation included: fewer epochs than the budget buys; `protocols.supervised_budget`),
    None when every supervised protocol was planned with the corrected one or there is no supervised floor."""
    protocols = sorted({r["protocol"] for r in evals if r.get("arm") == "supervised"})
    if not protocols:
        return None
    path = out / "calibration.json"
    plans = json.loads(path.read_text()) if path.is_file() else {}
    older = [p for p in protocols if plans.get(f"supervised-{p}", {}).get("epoch_seconds_from") != UPDATES_ALONE]
    if not older:
        return None
    return (f"supervised floor ({', '.join(older)}): epochs from the older rule, the whole fine-tuning run's time per "
            "epoch with its evaluation passes, so fewer epochs than its budget buys (benchmarks/studies/README.md, "
            "\"The supervised floor's epochs\")")


def write_report(out: str | Path, plots: bool = True) -> dict:
    """summary.json and the tables; the plots too unless `plots` is False (a study refreshes its tables after every
    arm and draws the plots once, at its end: drawing is most of a report's cost)."""
    out = Path(out)
    evals, pretrains = read_results(out)
    rows = aggregate(evals)
    budget = budget_summary(pretrains)
    config = out / "config.json"
    modality = json.loads(config.read_text()).get("modality", "vision") if config.is_file() else "vision"
    text, md = format_tables(rows, budget, medians=modality == "text")
    failed = failures(out)
    warned = [r for r in pretrains if r.get("warning")]
    if failed or warned:
        lines = [f"{ARM_LABELS.get(f['arm'], f['arm'])} seed {f['seed']}: pretraining failed ({f['reason']})"
                 for f in failed]
        lines += [f"{ARM_LABELS.get(r['arm'], r['arm'])} seed {r['seed']}: scored, but {r['warning']}" for r in warned]
        text += "\n" + "\n".join(lines) + "\n"
        md += "\n" + "\n".join(f"- {line}" for line in lines) + "\n"
    older = older_supervised_rule(out, evals)
    if older:
        text += "\n" + older + "\n"
        md += "\n" + older + "\n"
    matches = time_to_match(pretrains)
    if matches:
        parts = [f"seed {m['seed']}: " + (f"{m['fraction']:.2f}" if m["fraction"] is not None else "never")
                 for m in matches]
        line = ("time for data2vec 2.0's online k-NN to reach data2vec's final one (each the mean of 3 health passes), "
                "as a fraction of data2vec's pretraining time: " + ", ".join(parts))
        text += "\n" + line + "\n"
        md += "\n" + line + "\n"
    summary = {"rows": sorted(rows, key=lambda r: (r["arm"], r["protocol"])), "budget": budget, "failed": failed,
               "time_to_match": matches, "results_files": len(evals) + len(pretrains)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "table.txt").write_text(text)
    (out / "table.md").write_text(md)
    if plots:
        write_study_plots(out, rows, pretrains)
    return summary
