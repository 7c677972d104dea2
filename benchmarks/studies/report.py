"""Regenerate every study's summary, tables and plots from its committed results files, and the tables in
benchmarks/studies/README.md and the project's README.md.

    python benchmarks/studies/report.py           # rewrite summary.json, table.md/.txt, plots/ and the README blocks
    python benchmarks/studies/report.py --check   # write nothing to the READMEs; exit 1 if a block is out of date

A study is a folder of `benchmarks/results/studies/` that holds `data2vec compare` results
(`<arm>/seed<k>/<protocol>.json`). A README carries a study's tables between the markers `<!-- table:NAME -->`
and `<!-- /table:NAME -->` (NAME = the folder's name: everything between them becomes the folder's table.md), or
only its score table (mean +- std per arm and protocol, the first table of table.md) between
`<!-- scores:NAME -->` and `<!-- /scores:NAME -->`, so no README holds a study number that is not in a results
file.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "studies"
READMES = (Path(__file__).resolve().parent / "README.md", ROOT / "README.md")


def studies(results: Path) -> list[Path]:
    return sorted(p for p in results.iterdir() if p.is_dir() and any(p.glob("*/seed*/*.json")))


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
    from data2vec.cli.compare_report import write_report

    tables = {}
    for folder in studies(results):
        summary = write_report(folder)
        tables[folder.name] = (folder / "table.md").read_text()
        print(f"{folder.name}: {len(summary['rows'])} rows from {summary['results_files']} results files")
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
