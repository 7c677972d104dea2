"""Regenerate every study's summary, tables and plots from its committed results files, and the tables in
benchmarks/studies/README.md.

    python benchmarks/studies/report.py           # rewrite summary.json, table.md/.txt, plots/ and the README blocks
    python benchmarks/studies/report.py --check   # write nothing to the README; exit 1 if a block is out of date

A study is a folder of `benchmarks/results/studies/` that holds `data2vec compare` results
(`<arm>/seed<k>/<protocol>.json`). The README carries each study's table between the markers
`<!-- table:NAME -->` and `<!-- /table:NAME -->` (NAME = the folder's name); everything between them is
replaced by the folder's table.md, so the README never holds a number that is not in a results file.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "studies"
README = Path(__file__).resolve().parent / "README.md"


def studies(results: Path) -> list[Path]:
    return sorted(p for p in results.iterdir() if p.is_dir() and any(p.glob("*/seed*/*.json")))


def update_readme(text: str, tables: dict[str, str]) -> str:
    """`text` with each `<!-- table:NAME -->...<!-- /table:NAME -->` block replaced by tables[NAME]."""
    for name, table in tables.items():
        pattern = re.compile(rf"(<!-- table:{re.escape(name)} -->\n).*?(<!-- /table:{re.escape(name)} -->)", re.S)
        text = pattern.sub(lambda m, t=table: m.group(1) + t + m.group(2), text)
    return text


def main(argv: list[str] | None = None, results: Path = RESULTS, readme: Path = README) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a README table differs from its files")
    args = parser.parse_args(argv)
    from data2vec.cli.compare_report import write_report

    tables = {}
    for folder in studies(results):
        summary = write_report(folder)
        tables[folder.name] = (folder / "table.md").read_text()
        print(f"{folder.name}: {len(summary['rows'])} rows from {summary['results_files']} results files")
    old = readme.read_text()
    new = update_readme(old, tables)
    if args.check:
        if new != old:
            print(f"{readme} is out of date; run python benchmarks/studies/report.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
