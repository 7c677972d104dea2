"""Regenerate every study's summary, tables and plots from its committed results files, and the tables in
benchmarks/studies/README.md and docs/studies.md.

    python benchmarks/studies/report.py           # rewrite summary.json, table.md/.txt, plots/ and the page blocks
    python benchmarks/studies/report.py --check   # write nothing to the pages; exit 1 if a block is out of date

A study is a folder of `benchmarks/results/studies/` that holds `data2vec compare` results
(`<arm>/seed<k>/<protocol>.json`). A README carries a study's tables between the markers `<!-- table:NAME -->`
and `<!-- /table:NAME -->` (NAME = the folder's name: everything between them becomes the folder's table.md), or
only its score table (mean +- std per arm and protocol, the first table of table.md) between
`<!-- scores:NAME -->` and `<!-- /scores:NAME -->`, so no README holds a study number that is not in a results
file. A budget curve (a folder with `curve.json`, `data2vec compare --budget-minutes A,B,...`) is rebuilt the same
way (`curve.md`, `curve_summary.json`, its plots and every point's report) and its block holds `curve.md`.

A folder `NAME-tuning` holds recipe trials of the study NAME, one `data2vec compare --set` run per subfolder
(`benchmarks/studies/text_tuning.sh`). Its table (`NAME-tuning/table.md`, README block `<!-- table:NAME-tuning -->`)
sets each trial's seed-1 scores on the validation splits carved from the training data beside the study's seed-1 run
of the same method, the run it differs from in that one setting. GLUE dev is not in it: trials are chosen without it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "studies"
READMES = (Path(__file__).resolve().parent / "README.md", ROOT / "docs" / "studies.md")  # the pages with blocks


def studies(results: Path) -> list[Path]:
    return sorted(p for p in results.iterdir() if p.is_dir() and any(p.glob("*/seed*/*.json")))


def seed1_records(folder: Path, method: str) -> dict[str, dict]:
    """{protocol: record} of seed 1's evaluations of `method` in a study or trial folder (pretraining left out)."""
    records = [json.loads(p.read_text()) for p in sorted((folder / method / "seed1").glob("*.json"))]
    return {r["protocol"]: r for r in records if r.get("protocol") not in (None, "pretrain", "pretrain-failed")}


def validation_score(record: dict) -> float | None:
    """A record's score on the validation split carved from the training data: fine-tuning's at the selected
    epoch, a text probe's at the chosen C, an image probe's for the features it chose (the best on validation)."""
    from data2vec.study.report import selected_validation

    if record["details"].get("validation_scores"):
        return max(record["details"]["validation_scores"].values())
    return selected_validation(record)


def end_of_pretraining(folder: Path, method: str) -> str:
    """The last cell: how seed 1's pretraining ended. Text: the mean cosine between random token outputs at the
    last health pass (docs/health.md); images: the last online k-NN on training images; a collapse warning marked."""
    path = folder / method / "seed1" / "pretrain.json"
    if not path.exists():
        return "—"
    record = json.loads(path.read_text())
    if record.get("health_curve"):
        cell = f"anisotropy {record['health_curve'][-1]['anisotropy']:.2f}"
    elif record.get("knn_curve"):
        cell = f"online k-NN {record['knn_curve'][-1]['knn']:.1f}"
    else:
        cell = "—"
    return cell + (" (collapse warning)" if record.get("warning") else "")


def trials_table(trials: Path, study: Path) -> str:
    """Markdown: per method, the study's seed-1 run and then each trial of that method, validation scores with
    the trial's difference from the study's run in brackets."""
    from data2vec.study.report import PROTOCOL_ORDER, in_order

    by_method: dict[str, list[tuple[str, str]]] = {}
    for folder in sorted(p for p in trials.iterdir() if (p / "config.json").exists()):
        sets = json.loads((folder / "config.json").read_text()).get("recipe_sets") or {}
        for method, changes in sets.items():
            change = ", ".join(f"{method}.{key}={value}" for key, value in changes.items())
            by_method.setdefault(method, []).append((folder.name, change))
    references = {method: seed1_records(study, method) for method in by_method}
    measured = [seed1_records(trials / name, method) for method, runs in by_method.items() for name, _ in runs]
    protocols = in_order({p for records in measured for p in records}, PROTOCOL_ORDER)  # what the trials score

    def row(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    lines = [row(["run (seed 1)", "change from the study's recipe", *protocols, "end of pretraining"]),
             row(["---"] * (len(protocols) + 3))]
    for method, runs in sorted(by_method.items()):
        reference = {p: validation_score(r) for p, r in references[method].items()}
        cells = [f"{reference[p]:.1f}" if reference.get(p) is not None else "—" for p in protocols]
        lines.append(row([f"{method}: the study's run", "—", *cells, end_of_pretraining(study, method)]))
        for name, change in runs:
            mine = {p: validation_score(r) for p, r in seed1_records(trials / name, method).items()}
            cells = ["—" if mine.get(p) is None else f"{mine[p]:.1f}" if reference.get(p) is None
                     else f"{mine[p]:.1f} ({mine[p] - reference[p]:+.1f})" for p in protocols]
            lines.append(row([name, f"`{change}`", *cells, end_of_pretraining(trials / name, method)]))
    return "\n".join(lines) + "\n"


def score_table(table_md: str) -> str:
    """The first Markdown table of a table.md (the scores, mean +- std per arm and protocol), with its newline."""
    return table_md.split("\n\n", 1)[0].rstrip("\n") + "\n"


def update_readme(text: str, tables: dict[str, str]) -> str:
    """`text` with each `<!-- table:NAME -->...<!-- /table:NAME -->` block replaced by tables[NAME] and each
    `<!-- scores:NAME -->...<!-- /scores:NAME -->` block by its score table."""
    for name, table in tables.items():
        for kind, body in (("table", table), ("scores", score_table(table))):
            pattern = re.compile(rf"(<!-- {kind}:{re.escape(name)} -->\n).*?(<!-- /{kind}:{re.escape(name)} -->)",
                                 re.S)
            text = pattern.sub(lambda m, b=body: m.group(1) + b + m.group(2), text)
    return text


def main(argv: list[str] | None = None, results: Path = RESULTS, readmes: tuple[Path, ...] = READMES) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a README table differs from its files")
    args = parser.parse_args(argv)
    from data2vec.study.curve_report import write_curve_report
    from data2vec.study.report import write_report

    tables = {}
    for folder in studies(results):
        summary = write_report(folder)
        tables[folder.name] = (folder / "table.md").read_text()
        print(f"{folder.name}: {len(summary['rows'])} rows from {summary['results_files']} results files")
    for curve in sorted(p for p in results.iterdir() if (p / "curve.json").is_file()):  # budget curves
        summary = write_curve_report(curve)  # each point's own report too (a --reuse study among them)
        tables[curve.name] = (curve / "curve.md").read_text()
        print(f"{curve.name}: a curve over {len(summary['points'])} budget(s) {summary['points']}")
    for trials in sorted(results.glob("*-tuning")):
        study = results / trials.name.removesuffix("-tuning")
        if trials.is_dir() and study.is_dir():
            tables[trials.name] = trials_table(trials, study)
            (trials / "table.md").write_text(tables[trials.name])
            print(f"{trials.name}: {len(tables[trials.name].splitlines()) - 2} rows (trials of {study.name})")
    stale = []
    for readme in readmes:
        old = readme.read_text()
        new = update_readme(old, tables)
        if new == old:
            continue
        stale.append(readme)
        if not args.check:
            readme.write_text(new)
            print(f"updated {readme}")
    if args.check and stale:
        print(f"{', '.join(map(str, stale))} out of date; run python benchmarks/studies/report.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
