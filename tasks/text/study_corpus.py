"""The offline pretraining text of the text study: corpus.txt, a held-out slice, an 8k BPE.

What it builds, from the shared data folder given as `data_root` (never hard-coded):
- `corpus.txt` in the "plain" layout of `tasks.text.corpus` (one line per line, a blank line between
  documents), from these sources, in this order:
  * WikiText-2 `valid.txt` and `test.txt` (Merity et al. 2016; the train split is not in the folder), one
    document per article. Article boundaries are the level-1 headings ` = Title = ` found by
    `tasks.text.corpus.iter_sentences(layout="wikitext")`; sub-headings ` = = Section = = ` stay inside
    their article. The last `heldout_documents` articles of `test.txt` are left out of the corpus.
  * Tiny Shakespeare `input.txt` (Karpathy 2015): one document, one verse or speaker line per line.
  * The TRAINING sentences of each GLUE task present (Wang et al. 2019), read with `tasks.text.glue`'s
    readers through `tasks.text.corpus.glue_texts` (only `train.tsv`; labels dropped; both sentences of
    a pair on consecutive lines): one document per task. Self-pretraining on the downstream task's own
    unlabeled text is the protocol of Krishna et al. 2022.
  * Optionally (not a default source) the docstrings of this Python's standard library
    (`tasks.text.python_docs`), one document per module.
- `heldout.txt`: those last WikiText-2 test articles, same layout, for the masked-token accuracy of an MLM
  on text it never saw.
- `tokenizer/tokenizer.json`: a byte-level BPE of about `vocab_size` entries trained on corpus.txt only
  (`tasks.text.tokenizer.train_tokenizer`; the `tokenizers` trainer has no randomness, so the same text
  gives the same merges).
- `corpus.json`: per source and in total the files read (relative to `data_root`, with sha256),
  documents, lines, words (whitespace-split) and tokens (trained tokenizer, no specials); the vocabulary
  size; sha256 of corpus.txt, heldout.txt and tokenizer.json; and a contamination audit: how many GLUE
  dev examples (read for the audit only, never written) and how many held-out lines occur verbatim as a
  line of corpus.txt. No time stamps or absolute paths, so rebuilding gives a byte-identical file.

Choices (not from a paper)
- WikiText heading markup is removed (` = Title = ` -> `Title`, ` = = Section = = ` -> `Section`): the
  `=` signs are formatting, not text, and a corpus.txt that kept them would be read as a WikiText file by
  `TokenBlockDataset(layout="auto")`, which then ignores the blank lines between documents. WikiText's own
  tokenisation (`@-@`, `<unk>`, spaces around punctuation) is kept as it is.
- Tiny Shakespeare and each GLUE task are one document each: their natural units (a speech, an example)
  are a few dozen tokens, and `TokenBlockDataset`'s blocks never cross a document, so per-example
  documents would fill most of every block with padding (the default of `glue_corpus` too).
- python-docs is opt-in (`--sources ... python-docs`): its text depends on the Python version, which
  would make the stored counts machine-dependent.

Run: `python -m tasks.text.study_corpus --data ../shared/data --out runs/text-corpus`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tokenizers

from .corpus import glue_texts, iter_sentences
from .glue import GLUE_TASKS, find_task_file, load_glue
from .tokenizer import TextTokenizer, train_tokenizer

WIKITEXT_VALID = "wikitext-2-tokens/valid.txt"
WIKITEXT_TEST = "wikitext-2-tokens/test.txt"
SHAKESPEARE = "tinyshakespeare/input.txt"
GLUE_DIR = "glue"
GLUE_SOURCES = {f"glue-{name}": name for name in GLUE_TASKS}  # "glue-sst2" -> "sst2"
PYTHON_DOCS = "python-docs"
DEFAULT_SOURCES: tuple[str, ...] = ("wikitext-2-valid", "wikitext-2-test", "tinyshakespeare", *GLUE_SOURCES)
ALL_SOURCES: tuple[str, ...] = (*DEFAULT_SOURCES, PYTHON_DOCS)
DEFAULT_HELDOUT_DOCUMENTS = 10  # of WikiText-2 test's 62 articles: 27k words, 36k tokens (~5k masked at 15%)
_HEADING = re.compile(r"^(?:= )+(.*?)(?: =)+$")  # "= Title =" and "= = Section = =" (stripped lines)
_ENCODE_BATCH = 4096  # lines per tokenizer call when counting tokens


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
        digest = _sha256(Path(tmp))
    finally:
        Path(tmp).unlink(missing_ok=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return SourceText(PYTHON_DOCS, [], docs, note=f"Python {version} stdlib docstrings, sha256 {digest}")


# ---- writing and counting --------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_documents(path: Path, documents: Sequence[Sequence[str]]) -> None:
    """Plain layout, atomically: each document's lines, then a blank line before the next document."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as out:
        for d, doc in enumerate(documents):
            if d:
                out.write("\n")
            out.write("".join(line + "\n" for line in doc))
    os.replace(tmp, path)


def count_tokens(lines: Sequence[str], tokenizer: TextTokenizer) -> int:
    """Tokens of the lines without specials (what `build_token_cache` stores for them)."""
    total = 0
    for i in range(0, len(lines), _ENCODE_BATCH):
        total += sum(len(ids) for ids in tokenizer.encode_batch(lines[i:i + _ENCODE_BATCH], add_special_tokens=False))
    return total


def _counts(documents: Sequence[Sequence[str]], tokenizer: TextTokenizer) -> dict:
    lines = [line for doc in documents for line in doc]
    return {"documents": len(documents), "lines": len(lines), "words": sum(len(line.split()) for line in lines),
            "tokens": count_tokens(lines, tokenizer)}


def _dev_overlap(data_root: Path, tasks: Sequence[str], corpus_lines: set[str]) -> dict:
    """Per GLUE task: dev examples with a text that is also a line of corpus.txt (audit only)."""
    out = {}
    for task in tasks:
        try:
            path = find_task_file(task, "dev", data_root / GLUE_DIR)
        except (FileNotFoundError, ValueError):
            continue
        examples = load_glue(task, "dev", data_root / GLUE_DIR)
        hits = sum(any(" ".join(t.split()) in corpus_lines for t in (e.text_a, e.text_b) if t) for e in examples)
        out[f"glue-{task}"] = {"file": path.relative_to(data_root).as_posix(), "dev_examples": len(examples),
                               "dev_examples_with_a_text_in_corpus": hits}
    return out


def _check_sources(sources: Sequence[str]) -> None:
    unknown = [s for s in sources if s not in ALL_SOURCES]
    if unknown:
        raise ValueError(f"unknown corpus source(s) {unknown}; fix: choose from {', '.join(ALL_SOURCES)}")
    if not sources:
        raise ValueError(f"no corpus sources given; fix: choose from {', '.join(ALL_SOURCES)}")


def build_study_corpus(
    data_root: str | Path,
    out_dir: str | Path,
    vocab_size: int = 8192,
    sources: Sequence[str] = DEFAULT_SOURCES,
    heldout_documents: int = DEFAULT_HELDOUT_DOCUMENTS,
    min_frequency: int = 2,
) -> dict:
    """Build corpus.txt, heldout.txt, tokenizer/ and corpus.json under `out_dir`; returns corpus.json's dict.

    data_root: the shared data folder (holding wikitext-2-tokens/, tinyshakespeare/, glue/).
    sources: names from `ALL_SOURCES`; a listed source whose file is missing is recorded as skipped.
    heldout_documents: last WikiText-2 test articles kept out of the corpus for heldout.txt (0: none).
    """
    data_root, out_dir = Path(data_root), Path(out_dir)
    if not data_root.is_dir():
        raise FileNotFoundError(f"data folder not found: {data_root}; fix: pass --data the shared data folder "
                                "(e.g. ../shared/data)")
    _check_sources(sources)
    if heldout_documents < 0:
        raise ValueError(f"heldout_documents must be >= 0, got {heldout_documents}; fix: pass 0 or more")
    if vocab_size <= 256 + 5:  # checked before the reading, so a typo fails at once
        raise ValueError(f"byte-level BPE needs vocab_size > 261 (256 bytes + 5 specials), got {vocab_size}; "
                         "fix: pass --vocab-size 8192 or another value above 261")

    readers: dict[str, Callable[[], SourceText]] = {
        "wikitext-2-valid": lambda: read_wikitext_valid(data_root),
        "tinyshakespeare": lambda: read_shakespeare(data_root),
        PYTHON_DOCS: read_python_docs,
        **{src: (lambda task=task: read_glue_train(data_root, task)) for src, task in GLUE_SOURCES.items()},
    }
    used: list[SourceText] = []
    skipped: dict[str, str] = {}
    heldout: list[list[str]] | None = None
    heldout_reason = "wikitext-2-test not among the sources" if "wikitext-2-test" not in sources else None
    for name in ALL_SOURCES:  # a fixed order, whatever the order given
        if name not in sources:
            continue
        try:
            if name == "wikitext-2-test":
                src, heldout = split_wikitext_test(data_root, heldout_documents)
            else:
                src = readers[name]()
        except SourceMissing as missing:
            skipped[name] = str(missing)
            if name == "wikitext-2-test":
                heldout_reason = str(missing)
            continue
        used.append(src)
    if not any(src.documents for src in used):
        raise FileNotFoundError(
            f"{data_root}: no corpus text found (looked for {WIKITEXT_VALID}, {WIKITEXT_TEST}, {SHAKESPEARE}, "
            f"{GLUE_DIR}/<Task>/train.tsv); fix: pass --data the shared data folder that holds them "
            "(e.g. ../shared/data)")

    out_dir.mkdir(parents=True, exist_ok=True)
    corpus_path, heldout_path = out_dir / "corpus.txt", out_dir / "heldout.txt"
    write_documents(corpus_path, [doc for src in used for doc in src.documents])
    tokenizer = train_tokenizer(corpus_path, kind="bpe", vocab_size=vocab_size, min_frequency=min_frequency)
    tokenizer_file = tokenizer.save(out_dir / "tokenizer")

    rows: dict[str, dict] = {}
    for name in ALL_SOURCES:
        src = next((s for s in used if s.name == name), None)
        if src is not None:
            rows[name] = {"status": "used", "files": [p.relative_to(data_root).as_posix() for p in src.files],
                          **_counts(src.documents, tokenizer)}
            if src.note:
                rows[name]["note"] = src.note
        elif name in skipped:
            rows[name] = {"status": "skipped", "reason": skipped[name]}
    total = {k: sum(r[k] for r in rows.values() if r["status"] == "used")
             for k in ("documents", "lines", "words", "tokens")}

    corpus_lines = {line for src in used for line in src.lines}
    if heldout is not None and heldout:
        write_documents(heldout_path, heldout)
        held = {"status": "written", "file": "heldout.txt", "source": WIKITEXT_TEST,
                "articles": f"last {heldout_documents}", **_counts(heldout, tokenizer),
                "sha256": _sha256(heldout_path),
                "lines_also_in_corpus": sum(line in corpus_lines for doc in heldout for line in doc)}
    else:
        heldout_path.unlink(missing_ok=True)  # never leave a stale slice from an earlier build
        held = {"status": "skipped", "reason": heldout_reason or "heldout_documents is 0"}

    input_files = sorted({p for src in used for p in src.files})
    result = {
        "what": "offline pretraining text of the text study (issue 16); built by tasks/text/study_corpus.py",
        "parameters": {"vocab_size": vocab_size, "min_frequency": min_frequency, "sources": list(sources),
                       "heldout_documents": heldout_documents, "tokenizers_version": tokenizers.__version__},
        "inputs": {p.relative_to(data_root).as_posix(): _sha256(p) for p in input_files},
        "sources": rows,
        "total": total,
        "vocab_size": tokenizer.vocab_size,
        "corpus": {"file": "corpus.txt", "sha256": _sha256(corpus_path), "bytes": corpus_path.stat().st_size},
        "tokenizer": {"file": "tokenizer/tokenizer.json", "sha256": _sha256(tokenizer_file)},
        "heldout": held,
        "dev_overlap": _dev_overlap(data_root, [GLUE_SOURCES[s.name] for s in used if s.name in GLUE_SOURCES],
                                    corpus_lines),
    }
    (out_dir / "corpus.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


def format_table(result: dict) -> str:
    """The counts as a small text table (skipped sources with their reason)."""
    head = f"{'source':<18} {'docs':>6} {'lines':>8} {'words':>10} {'tokens':>10}"
    rows = [head, "-" * len(head)]
    for name, r in result["sources"].items():
        if r["status"] == "used":
            rows.append(f"{name:<18} {r['documents']:>6} {r['lines']:>8} {r['words']:>10} {r['tokens']:>10}")
        else:
            rows.append(f"{name:<18} skipped: {r['reason']}")
    t = result["total"]
    rows += ["-" * len(head), f"{'total':<18} {t['documents']:>6} {t['lines']:>8} {t['words']:>10} {t['tokens']:>10}"]
    h = result["heldout"]
    if h["status"] == "written":
        rows.append(f"{'heldout':<18} {h['documents']:>6} {h['lines']:>8} {h['words']:>10} {h['tokens']:>10}")
    else:
        rows.append(f"{'heldout':<18} skipped: {h['reason']}")
    rows.append(f"vocabulary: {result['vocab_size']} tokens; corpus.txt sha256 {result['corpus']['sha256'][:16]}...")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tasks.text.study_corpus",
        description="Build the text study's offline pretraining corpus (corpus.txt, heldout.txt, a BPE "
                    "tokenizer and corpus.json with the counts) from the shared data folder.")
    ap.add_argument("--data", type=Path, required=True,
                    help="the shared data folder holding wikitext-2-tokens/, tinyshakespeare/ and glue/ "
                         "(on our machines ../shared/data)")
    ap.add_argument("--out", type=Path, required=True,
                    help="output folder (e.g. runs/text-corpus); its corpus.txt, heldout.txt, tokenizer/ and "
                         "corpus.json are replaced")
    ap.add_argument("--vocab-size", type=int, default=8192,
                    help="BPE vocabulary size including 256 bytes and 5 specials (default 8192). With ~2M words "
                         "of text, 8k keeps most frequent words whole; much larger vocabularies leave rare "
                         "tokens with too few training examples for a small encoder")
    ap.add_argument("--sources", nargs="+", default=list(DEFAULT_SOURCES), choices=ALL_SOURCES, metavar="SOURCE",
                    help=f"sources to include (default: all but {PYTHON_DOCS}); choose from {', '.join(ALL_SOURCES)}. "
                         f"{PYTHON_DOCS} adds about 170k words but depends on the Python version, so counts then "
                         "differ between machines")
    ap.add_argument("--heldout-documents", type=int, default=DEFAULT_HELDOUT_DOCUMENTS,
                    help="last WikiText-2 test articles kept out of the corpus and written to heldout.txt, for "
                         f"masked-token accuracy on unseen text (default {DEFAULT_HELDOUT_DOCUMENTS}: 27k words, about "
                         "5k masked tokens at a 15%% mask ratio; 0 writes none)")
    args = ap.parse_args(argv)
    try:
        result = build_study_corpus(args.data, args.out, vocab_size=args.vocab_size, sources=args.sources,
                                    heldout_documents=args.heldout_documents)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(result))
    print(f"written: {args.out / 'corpus.txt'}, {args.out / 'heldout.txt'}, {args.out / 'tokenizer'}, "
          f"{args.out / 'corpus.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
