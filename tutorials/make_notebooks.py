"""Write every tutorial notebook from its source, a jupytext percent-format script.

The source of `tutorials/NN_topic.ipynb` is `tutorials/NN_topic.py`: `# %%` starts a code cell and
`# %% [markdown]` a markdown cell whose lines are `# ` comments. The script runs as plain Python and
is linted like the library; the notebook is only its cells, written without outputs and with cell ids
derived from the notebook's name and the cell's index, so regenerating gives an identical file.

    python tutorials/make_notebooks.py           # rewrite tutorials/NN_*.ipynb from tutorials/NN_*.py
    python tutorials/make_notebooks.py --check   # exit 1 naming each notebook that is not its source's

tests/test_tutorials.py runs `--check`, executes every notebook and runs every source as a script.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import jupytext
import nbformat

HERE = Path(__file__).resolve().parent
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def notebook_text(source: Path) -> str:
    """The .ipynb text for one percent-format source: its cells, stable ids, no outputs, no jupytext header."""
    nb = jupytext.read(source, fmt="py:percent")
    nb.nbformat, nb.nbformat_minor = 4, 5  # 4.5: the first version with cell ids
    nb.metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    for index, cell in enumerate(nb.cells):
        cell.id = hashlib.sha1(f"{source.stem}/{index}".encode()).hexdigest()[:12]
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 naming each notebook that differs from its .py source "
                             "or has none (fix: edit the .py, then run this script without --check)")
    args = parser.parse_args(argv)
    sources = sorted(HERE.glob("[0-9][0-9]_*.py"))
    problems = [f"{nb.name} has no source {nb.stem}.py (write one, or delete the notebook)"
                for nb in sorted(HERE.glob("[0-9][0-9]_*.ipynb")) if not nb.with_suffix(".py").is_file()]
    for source in sources:
        target, text = source.with_suffix(".ipynb"), notebook_text(source)
        if not args.check:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target.name} from {source.name}")
        elif not target.is_file():
            problems.append(f"{target.name} is missing (run python tutorials/make_notebooks.py)")
        elif target.read_text(encoding="utf-8") != text:
            problems.append(f"{target.name} differs from {source.name} (run python tutorials/make_notebooks.py)")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
