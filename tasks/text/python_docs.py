"""A built-in English text corpus: the docstrings of Python's own standard library.

Why: `data2vec pretrain --modality text` needs text, and a fresh machine without downloads still has
one source of real English prose: the documentation strings that ship inside every Python installation.
`--data python-docs` builds it on first use (with Python 3.11: 432 modules, 168k words, 1 MB, about
10 s) and caches it under `$DATA2VEC_CACHE` (default `~/.cache/data2vec`).

What it does
- Walks the standard library's `.py` files (`sysconfig.get_paths()["stdlib"]`) in sorted order, skipping
  test suites, IDLE, 2to3, site-packages and private modules (`_name.py`, but not `__init__.py`); parses
  each with `ast` (nothing is imported or executed) and takes the docstrings of the module, its classes
  and its functions.
- Keeps prose only: a docstring is split into paragraphs at blank lines; a paragraph is kept when it
  looks like a sentence (at least `min_words` words, mostly letters, no doctest `>>>` prompts, no
  indented code or tables), and its lines are joined into one line.
- Writes the "plain" layout of `tasks.text.corpus`: one paragraph per line, a blank line after each
  source file, so each module is one document.

It is small next to the corpora of the paper (BooksCorpus + Wikipedia, about 3.3B words): it is for
smoke runs and for learning the pipeline, not for reproducing the paper's numbers.
"""

from __future__ import annotations

import ast
import os
import re
import sys
import sysconfig
import tempfile
import warnings
from pathlib import Path

from .corpus import default_cache_dir

NAME = "python-docs"  # the --data value that selects this corpus

_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__",
              "turtledemo", "ensurepip"}  # test suites, IDE, tools and vendored code (plus config-*, below)
_WORD = re.compile(r"[A-Za-z]+")


def stdlib_dir() -> Path:
    """The folder of this interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _skipped(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    private = parts[-1].startswith("_") and parts[-1] != "__init__.py"  # a package's __init__ is public
    return private or any(p in _SKIP_DIRS or p.startswith("config-") for p in parts[:-1])


def _docstrings(source: str) -> list[str]:
    """Docstrings of the module, its classes and its functions, in source order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # old escape sequences in some stdlib files
        tree = ast.parse(source)
    nodes = [tree] + [n for n in ast.walk(tree)
                      if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    nodes.sort(key=lambda n: getattr(n, "lineno", 0))
    return [doc for doc in (ast.get_docstring(n) for n in nodes) if doc]


def prose_paragraphs(docstring: str, min_words: int = 8) -> list[str]:
    """The paragraphs of a docstring that read as English prose, each joined into one line."""
    kept = []
    for para in re.split(r"\n\s*\n", docstring):
        lines = para.split("\n")
        if any(line.lstrip().startswith((">>>", "...", "$ ")) for line in lines):
            continue  # doctest or shell example
        if any(line.startswith(("    ", "\t")) for line in lines):
            continue  # indented: code, tables or argument lists
        text = " ".join(line.strip() for line in lines).strip()
        words = _WORD.findall(text)
        if len(words) < min_words or sum(map(len, words)) < 0.6 * len(text.replace(" ", "")):
            continue  # too short, or mostly symbols and digits
        kept.append(text)
    return kept


def write_corpus(out_file: str | Path, root: str | Path | None = None, min_words: int = 8) -> dict:
    """Write the corpus of every module under `root` (default: the stdlib) to `out_file` atomically.

    Returns counts: files read, documents (files with kept text), paragraphs and words.
    """
    root = Path(root) if root is not None else stdlib_dir()
    if not root.is_dir():
        raise FileNotFoundError(f"standard library folder not found: {root}")
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    counts = {"files": 0, "documents": 0, "paragraphs": 0, "words": 0}
    fd, tmp = tempfile.mkstemp(dir=out_file.parent, prefix=out_file.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for path in sorted(root.rglob("*.py")):
                if _skipped(path, root):
                    continue
                try:
                    docs = _docstrings(path.read_text(encoding="utf-8"))
                except (SyntaxError, UnicodeDecodeError, ValueError):
                    continue  # a file this interpreter cannot parse (e.g. a template): not prose anyway
                counts["files"] += 1
                paragraphs = [p for doc in docs for p in prose_paragraphs(doc, min_words)]
                if not paragraphs:
                    continue
                fh.write("\n".join(paragraphs) + "\n\n")  # a blank line ends the document
                counts["documents"] += 1
                counts["paragraphs"] += len(paragraphs)
                counts["words"] += sum(len(p.split()) for p in paragraphs)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the corpus is not
        os.replace(tmp, out_file)  # a reader sees the whole corpus or none
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return counts


def python_docs_file(cache_dir: str | Path | None = None) -> Path:
    """The corpus file for this Python version, built on first use under the cache folder."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    path = cache_dir / f"{NAME}-{version}.txt"
    if not path.is_file():
        write_corpus(path)
    return path
