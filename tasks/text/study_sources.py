"""The sources of the text study's pretraining corpus and how each is read (tasks/text/study_corpus.py builds the
corpus from them): WikiText-2 (Merity et al. 2016) valid and test articles, Tiny Shakespeare (Karpathy 2015), the
training sentences of the GLUE tasks (Wang et al. 2019, labels dropped) and, opt-in, the docstrings of Python's
standard library. Each reader returns a `SourceText` (documents of one-line texts) or raises `SourceMissing`.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .corpus import glue_texts, iter_sentences
from .glue import GLUE_TASKS, find_task_file
from .python_docs import NAME as PYTHON_DOCS

WIKITEXT_VALID = "wikitext-2-tokens/valid.txt"
WIKITEXT_TEST = "wikitext-2-tokens/test.txt"
SHAKESPEARE = "tinyshakespeare/input.txt"
GLUE_DIR = "glue"
GLUE_SOURCES = {f"glue-{name}": name for name in GLUE_TASKS}  # "glue-sst2" -> "sst2"
_HEADING = re.compile(r"^(?:= )+(.*?)(?: =)+$")  # "= Title =" and "= = Section = =" (stripped lines)


class SourceMissing(Exception):
    """A source whose input file is not in the data folder (reported as skipped)."""


@dataclass
class SourceText:
    """The documents one source contributes: each document is a list of non-empty one-line texts."""

    name: str
    files: list[Path]  # input files read, absolute
    documents: list[list[str]] = field(default_factory=list)
    note: str | None = None  # e.g. "last 10 articles held out"

    @property
    def lines(self) -> list[str]:
        return [line for doc in self.documents for line in doc]


# ---- readers ---------------------------------------------------------------------------------------------


def _need(data_root: Path, rel: str) -> Path:
    path = data_root / rel
    if not path.is_file():
        raise SourceMissing(f"{rel} not found")
    return path


def _strip_heading(line: str) -> str:
    """`= Title =` -> `Title`, `= = Section = =` -> `Section`; other lines unchanged."""
    m = _HEADING.match(line)
    return m.group(1).strip() if m and m.group(1).strip() else line


def wikitext_articles(path: str | Path) -> list[list[str]]:
    """The articles of a WikiText file, each a list of its lines with the heading markup removed."""
    articles: list[list[str]] = []
    for line, starts_article in iter_sentences(path, layout="wikitext"):
        if starts_article:
            articles.append([])
        articles[-1].append(_strip_heading(line))
    return articles


def _plain_documents(path: Path) -> list[list[str]]:
    docs: list[list[str]] = []
    for line, starts_doc in iter_sentences(path, layout="plain"):
        if starts_doc:
            docs.append([])
        docs[-1].append(line)
    return docs


def read_wikitext_valid(data_root: Path) -> SourceText:
    path = _need(data_root, WIKITEXT_VALID)
    return SourceText("wikitext-2-valid", [path], wikitext_articles(path))


def split_wikitext_test(data_root: Path, heldout_documents: int) -> tuple[SourceText, list[list[str]]]:
    """WikiText-2 test without its last `heldout_documents` articles, and those articles."""
    path = _need(data_root, WIKITEXT_TEST)
    articles = wikitext_articles(path)
    if heldout_documents >= len(articles):
        raise ValueError(f"{WIKITEXT_TEST} has {len(articles)} articles, cannot hold out {heldout_documents}; "
                         f"fix: pass --heldout-documents below {len(articles)}")
    keep = len(articles) - heldout_documents
    note = f"last {heldout_documents} of {len(articles)} articles held out" if heldout_documents else None
    return SourceText("wikitext-2-test", [path], articles[:keep], note), articles[keep:]


def read_shakespeare(data_root: Path) -> SourceText:
    path = _need(data_root, SHAKESPEARE)
    lines = [line for doc in _plain_documents(path) for line in doc]  # speeches joined: one document
    return SourceText("tinyshakespeare", [path], [lines] if lines else [])


def read_glue_train(data_root: Path, task: str) -> SourceText:
    """The labels-dropped training text of one GLUE task as one document (dev and test never read)."""
    glue_root = data_root / GLUE_DIR
    try:
        path = find_task_file(task, "train", glue_root)
    except FileNotFoundError:
        raise SourceMissing(f"{GLUE_DIR}/{GLUE_TASKS[task].folder}/train.tsv not found") from None
    lines = []
    for texts in glue_texts(task, glue_root, splits=("train",)):  # 1 or 2 texts per example, no label
        lines.extend(t for t in (" ".join(x.split()) for x in texts) if t)  # one line each, spaces collapsed
    return SourceText(f"glue-{task}", [path], [lines] if lines else [])


def read_python_docs() -> SourceText:
    from .python_docs import stdlib_dir, write_corpus

    if not stdlib_dir().is_dir():
        raise SourceMissing(f"this Python's standard library folder {stdlib_dir()} not found")
    fd, tmp = tempfile.mkstemp(suffix=".txt")
    os.close(fd)
    try:
        write_corpus(tmp)
        docs = _plain_documents(Path(tmp))
        digest = sha256_of(Path(tmp))
    finally:
        Path(tmp).unlink(missing_ok=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return SourceText(PYTHON_DOCS, [], docs, note=f"Python {version} stdlib docstrings, sha256 {digest}")


def sha256_of(path: Path) -> str:
    """The file's SHA-256 (hex), read in 1 MiB chunks: recorded for every input and output of the corpus."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
