"""An equal-budget study over several budgets: every arm and floor at every budget, and each protocol's score as a
curve over the pretraining budget (`data2vec compare --budget-minutes 4,15,60,240`).

Layout (OUT = --out): OUT/curve.json lists the points, {budget in minutes: folder relative to OUT}; each point is
an ordinary one-budget study folder (OUT/budget-<b>min/ by default, or a finished study given with --reuse, whose
results count as that point), so everything of the one-budget study (resume, --report-only, the refusal of
other settings) holds per point. OUT/calibration.json is the curve's: each method's seconds per update, measured
once (or taken from the reused study), from which every point's update count follows (steps = budget / seconds
per update), so the points of a curve differ only in their number of updates, even when later points run on
another machine. The floors that do not depend on the budget (random init, raw pixels or audio features, the
majority class) are computed once and shared between points, each copy marked `shared_from` (a path relative to
the point's folder). OUT/curve.md, curve.txt, curve_summary.json and OUT/plots/curve-<protocol>.png are rebuilt
from the points' results files after each point (and by --report-only).

Order: seed by seed, and within a seed the budgets in the order given, so the first seed's curve is complete
before the second seed starts (pass the most informative budgets first).

Differences from the papers: none publishes this curve for data2vec; the budget in CPU-minutes is the project's
own unit (docs/design.md section 8), and the x axis of the plots is the samples seen, which no machine changes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from .errors import StudyError
from .records import check_same_study, say, write_json

CURVE_FILE = "curve.json"
BUDGET_FREE_ARMS = ("random", "pixels", "features", "majority")  # floors whose results do not depend on the budget


def budget_key(minutes: float) -> str:
    return f"{minutes:g}"


def point_folder(minutes: float) -> str:
    return f"budget-{budget_key(minutes)}min"


def is_curve(out: str | Path) -> bool:
    return (Path(out) / CURVE_FILE).is_file()


def load_curve(out: str | Path) -> dict:
    path = Path(out) / CURVE_FILE
    return json.loads(path.read_text()) if path.is_file() else {"points": {}}


# ---- setting up the points ----------------------------------------------------------------------------------


def register_points(cfg, budgets: list[float], reuse: list[str]) -> dict:
    """curve.json with the points of `budgets` added (and each --reuse study as the point of its budget)."""
    out = Path(cfg.out)
    curve = load_curve(out)
    curve.setdefault("precision", cfg.precision)
    if curve["precision"] != cfg.precision:
        raise StudyError(f"{out} holds a curve in {curve['precision']}, this run asks for {cfg.precision}; fix: pass "
                         f"--precision {curve['precision']} (one precision per curve) or use another --out")
    for folder in reuse:
        stored = Path(folder) / "config.json"
        if not stored.is_file():
            raise StudyError(f"--reuse {folder}: no config.json there; fix: give the --out of a finished comparison")
        minutes = float(json.loads(stored.read_text())["budget_minutes"])
        check_reused(cfg, folder, minutes)
        curve["points"][budget_key(minutes)] = os.path.relpath(folder, out)
        if not (out / "calibration.json").is_file() and (Path(folder) / "calibration.json").is_file():
            lift_calibration(out, Path(folder), source=os.path.relpath(folder, out))
    for minutes in budgets:
        curve["points"].setdefault(budget_key(minutes), point_folder(minutes))
    curve["points"] = dict(sorted(curve["points"].items(), key=lambda kv: float(kv[0])))
    write_json(out / CURVE_FILE, curve)
    return curve


def check_reused(cfg, folder: str, minutes: float) -> None:
    """A finished study counts as a point only if it was made with the curve's settings: every field that defines a
    study (`study_fields`: data, encoder, batch, precision, probes, ...) but the budget; its seeds and methods may
    differ (the table shows what each point has)."""
    try:
        check_same_study(dataclasses.replace(cfg, out=str(folder), budget_minutes=minutes))
    except StudyError as error:
        raise StudyError(f"--reuse {folder} cannot be a point of this curve: {error}") from None


def point_config(cfg, curve: dict, minutes: float):
    """The one-budget study config of the point at `minutes`: its folder, its run folders, its budget."""
    out = Path(cfg.out)
    folder = out / curve["points"][budget_key(minutes)]
    stored = folder / "config.json"
    runs = json.loads(stored.read_text()).get("runs") if stored.is_file() else None  # a reused study's own runs
    runs = runs or str(Path(cfg.runs) / point_folder(minutes))
    return dataclasses.replace(cfg, out=os.path.normpath(folder), runs=runs, budget_minutes=minutes)


def seed_calibration(curve_out: Path, point) -> None:
    """The point's calibration.json gets every method the curve has measured, with the steps of its budget."""
    curve_table = _read(curve_out / "calibration.json")
    path = Path(point.out) / "calibration.json"
    table = _read(path)
    added = False
    for name, entry in curve_table.items():
        if name not in table:
            table[name] = {**entry, "steps": max(10, int(point.budget_s // entry["s_per_update"])),
                           "budget_minutes": point.budget_minutes}
            added = True
    if added:
        write_json(path, table)


def lift_calibration(curve_out: Path, point_out: Path, source: str | None = None) -> None:
    """Methods the point measured that the curve does not have yet become the curve's (seconds per update only)."""
    table = _read(curve_out / "calibration.json")
    added = False
    for name, entry in _read(point_out / "calibration.json").items():
        if "s_per_update" in entry and name not in table:
            table[name] = {k: v for k, v in entry.items() if k not in ("steps", "budget_minutes")}
            table[name]["measured_in"] = source or os.path.relpath(point_out, curve_out)
            added = True
    if added:
        write_json(curve_out / "calibration.json", table)


def share_budget_free(curve_out: Path, curve: dict, point, seed: int) -> None:
    """Copy the budget-free floors' results of `seed` from another point into this one (marked `shared_from`)."""
    here = Path(point.out)
    for arm in BUDGET_FREE_ARMS:
        if (here / arm / f"seed{seed}").is_dir():
            continue
        for folder in curve["points"].values():
            source = curve_out / folder / arm / f"seed{seed}"
            if source.resolve() == (here / arm / f"seed{seed}").resolve() or not source.is_dir():
                continue
            for path in sorted(source.glob("*.json")):
                record = json.loads(path.read_text())
                record.setdefault("shared_from", os.path.relpath(path, here))
                write_json(here / arm / f"seed{seed}" / path.name, record)
            break


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


# ---- the run ------------------------------------------------------------------------------------------------


def run_curve(cfg, budgets: list[float], reuse: list[str], run_point, load) -> dict:
    """Every point of `budgets` for every seed (seed-major), then the curve report. `run_point(point_cfg,
    plots=False, data=...)` runs one one-budget study (`pipeline.run_comparison`) on the data `load(point_cfg)`
    (`pipeline.load_data`) read once, at the first point: the points differ in their budget only."""
    from .curve_report import write_curve_report

    out = Path(cfg.out)
    curve = register_points(cfg, budgets, reuse)  # checks first: a refused --reuse leaves no folder behind
    data = None
    for k in range(1, len(cfg.seeds) + 1):
        for minutes in budgets:
            point = dataclasses.replace(point_config(cfg, curve, minutes), seeds=cfg.seeds[:k])
            Path(point.out).mkdir(parents=True, exist_ok=True)
            seed_calibration(out, point)
            share_budget_free(out, curve, point, cfg.seeds[k - 1])
            say(f"curve point {budget_key(minutes)} min, seed {cfg.seeds[k - 1]} ({point.out})")
            data = load(point) if data is None else data
            run_point(point, plots=False, data=data)  # the points' plots are drawn with the curve's, at the end
            lift_calibration(out, Path(point.out))
            write_curve_report(out, plots=False)  # the tables after every point; the plots once, at the end
    return write_curve_report(out)

